"""`model.init_from`: a new run starts from a model folder, rows moved by vocabulary entry."""

import pytest
import torch

from mmntp.model.checkpoint import load_model
from mmntp.model.config import preset
from mmntp.model.transformer import Transformer
from mmntp.model.vocab import VocabLayout
from mmntp.train.init import init_from_model, row_mapping
from mmntp.train.recipe import Recipe


def _grown(old: VocabLayout) -> VocabLayout:
    """The old layout plus an image codebook appended (existing ids do not move)."""
    codebooks = {r.modality: [r.size] for r in old.ranges if r.modality != "text"}
    return VocabLayout.build(text_size=256, codebooks={**codebooks, "image": [512]})


def test_weights_and_vocab_rows_carry_over_to_a_grown_vocabulary(tiny_model_dir):
    source = load_model(tiny_model_dir)
    vocab = _grown(source.vocab)
    torch.manual_seed(1)
    model = Transformer(preset("test", vocab.size))
    fresh_rows = model.tok_embeddings.weight.detach().clone()
    counts = init_from_model(model, vocab, tiny_model_dir)
    old_ids, new_ids = row_mapping(source.vocab, vocab)
    assert counts["vocab_rows"] > 0 and len(old_ids) == 19 + 256 + 4096
    old_emb = source.model.tok_embeddings.weight
    torch.testing.assert_close(model.tok_embeddings.weight[new_ids], old_emb[old_ids])
    image = vocab.range("image")
    torch.testing.assert_close(
        model.tok_embeddings.weight[image.start : image.stop], fresh_rows[image.start : image.stop]
    )
    old_state = source.model.state_dict()
    for name, tensor in model.state_dict().items():
        if "tok_embeddings" not in name and "heads.token" not in name:
            torch.testing.assert_close(tensor, old_state[name], msg=name)


def test_an_unchanged_vocabulary_carries_every_row_padding_too(tiny_model_dir):
    source = load_model(tiny_model_dir)
    torch.manual_seed(1)
    model = Transformer(preset("test", source.vocab.size))
    init_from_model(model, source.vocab, tiny_model_dir)
    assert source.vocab.size > 19 + 256 + 4096  # padded: the rows past the last code
    assert torch.equal(model.tok_embeddings.weight, source.model.tok_embeddings.weight)


def test_a_different_model_shape_is_refused(tiny_model_dir):
    vocab = load_model(tiny_model_dir).vocab
    model = Transformer(preset("test", vocab.size, dim=96))
    with pytest.raises(ValueError, match="use the same model preset"):
        init_from_model(model, vocab, tiny_model_dir)


def test_a_resized_codebook_is_refused(tiny_model_dir):
    old = load_model(tiny_model_dir).vocab
    smaller = VocabLayout.build(text_size=256, codebooks={"timeseries": [1024]})
    with pytest.raises(ValueError, match="timeseries codebook 0 has 4096 codes there and 1024"):
        row_mapping(old, smaller)


def test_recipe_resolves_init_from_against_its_folder(tmp_path):
    data = {"out_dir": "runs/x", "model": {"preset": "test", "init_from": "../models/base"}}
    recipe = Recipe.from_dict(data, base_dir=tmp_path / "recipes")
    assert recipe.model.init_from == str((tmp_path / "models" / "base").resolve())
    assert recipe.model.overrides == {}
    assert recipe.to_dict()["model"]["init_from"] == recipe.model.init_from
    with pytest.raises(ValueError, match="model.init_from must be a folder path"):
        Recipe.from_dict({"model": {"init_from": 3}})


def _with_series_head(model: Transformer, vocab: VocabLayout) -> Transformer:
    from mmntp.model.heads import FrameHead, FrameHeadConfig, register_head

    span = vocab.range("timeseries")
    config = FrameHeadConfig(model.config.dim, [[span.start, span.stop]], modality="timeseries")
    register_head(model, FrameHead(config), "timeseries")
    return model


def test_a_modality_whose_card_changed_starts_fresh(tiny_model_dir, tmp_path):
    """Codes of another card mean other things: its rows and its head are not copied."""
    from mmntp.model.checkpoint import save_model
    from mmntp.tokenizers import MeanScaleUniformBins

    source = load_model(tiny_model_dir)
    vocab, cards = source.vocab, dict(source.tokenizers)
    _with_series_head(source.model, vocab)
    save_model(tmp_path / "src", source.model, vocab, cards)
    torch.manual_seed(3)
    model = _with_series_head(Transformer(preset("test", vocab.size)), vocab)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    old = source.model.state_dict()

    assert init_from_model(model, vocab, tmp_path / "src", cards)["fresh"] == []
    head = [k for k in old if k.startswith("heads.timeseries.")]
    assert head and all(torch.equal(model.state_dict()[k], old[k].float()) for k in head)

    model.load_state_dict(before)
    other = cards | {"timeseries": MeanScaleUniformBins(low=-10.0, high=10.0)}
    assert init_from_model(model, vocab, tmp_path / "src", other)["fresh"] == ["timeseries"]
    state, emb = model.state_dict(), model.tok_embeddings.weight
    series, text = vocab.range("timeseries"), vocab.range("text")
    assert torch.equal(
        emb[series.start : series.stop], before["tok_embeddings.weight"][series.start : series.stop]
    )
    assert torch.equal(
        emb[text.start : text.stop], old["tok_embeddings.weight"][text.start : text.stop].float()
    )
    assert all(torch.equal(state[k], before[k]) for k in head)
    assert torch.equal(state["norm.weight"], old["norm.weight"].float())


def test_a_retrained_cochlear_decoder_keeps_the_codes_but_a_new_codebook_does_not():
    """The cochlear card's decoder does not decide codes: retraining it (or its shape, or the
    carrier phases) keeps a model's audio rows; another codebook or front end does not."""
    from mmntp.tokenizers.audio_cochlear import CochlearTokenizer
    from mmntp.train.init import changed_tokenizers

    def card(**kw):
        return CochlearTokenizer(channels=16, fir_length=128, codebook_size=32, **kw)

    base = card(width=16, carriers=24)
    retrained = card(width=16, carriers=24)
    with torch.no_grad():
        for p in retrained.decoder.parameters():
            p.add_(0.5)
    reshaped = card(width=8, carriers=12, seed=5)  # a fresh card's codebook follows the seed
    reshaped.codebook = base.codebook
    recoded = card(width=16, carriers=24)
    recoded.codebook = base.codebook + 0.1
    front = CochlearTokenizer(channels=16, fir_length=128, codebook_size=32, f_min=60.0)
    assert not torch.equal(base.decoder.out.weight, retrained.decoder.out.weight)
    old = {"audio": base}
    assert changed_tokenizers(old, {"audio": retrained}) == set()
    assert changed_tokenizers(old, {"audio": reshaped}) == set()
    assert changed_tokenizers(old, {"audio": recoded}) == {"audio"}
    assert changed_tokenizers(old, {"audio": front}) == {"audio"}


def test_a_deeper_model_grown_by_init_layers_computes_what_the_source_did(tiny_model_dir):
    """Block expansion: repeated blocks start as identities, so the hidden states match at
    step 0, and every grown block takes its weights from the block it names. (Logits of the
    vocabulary's padding rows, which no source entry maps to, stay fresh.)"""
    source = load_model(tiny_model_dir)
    torch.manual_seed(2)
    model = Transformer(preset("test", source.vocab.size, n_layers=4))
    init_from_model(model, source.vocab, tiny_model_dir, layers=[0, 0, 1, 1])
    mapped = row_mapping(source.vocab, source.vocab)[0]  # not the padding rows (fresh)
    ids = mapped[torch.randint(len(mapped), (2, 24), generator=torch.Generator().manual_seed(0))]
    with torch.no_grad():
        want = source.model.float().hidden_states(ids)
        torch.testing.assert_close(model.hidden_states(ids), want, rtol=1e-5, atol=1e-5)
    old, new = source.model.state_dict(), model.state_dict()
    assert torch.equal(new["layers.2.attn.q_proj.weight"], old["layers.1.attn.q_proj.weight"])
    assert torch.equal(new["layers.2.mlp.down_proj.weight"], old["layers.1.mlp.down_proj.weight"])
    assert not new["layers.3.mlp.down_proj.weight"].any()
    assert not new["layers.1.attn.o_proj.weight"].any()


def test_init_layers_errors_name_the_field(tiny_model_dir):
    vocab = load_model(tiny_model_dir).vocab
    model = Transformer(preset("test", vocab.size, n_layers=3))
    with pytest.raises(ValueError, match=r"model.init_layers: .* has blocks 0-1, not \[2\]"):
        init_from_model(model, vocab, tiny_model_dir, layers=[0, 1, 2])
    base = {"preset": "test", "init_from": "m", "n_layers": 3}
    with pytest.raises(ValueError, match="model.init_layers names 2 blocks but the model has 3"):
        Recipe.from_dict({"model": base | {"init_layers": [0, 1]}})
    with pytest.raises(ValueError, match="model.init_layers must be a list of block indices"):
        Recipe.from_dict({"model": base | {"init_layers": [0, "x", 1]}})
    with pytest.raises(ValueError, match="model.init_layers needs model.init_from"):
        Recipe.from_dict({"model": {"preset": "test", "init_layers": [0, 1]}})
    recipe = Recipe.from_dict({"model": base | {"init_layers": [0, 1, 1]}})
    assert recipe.to_dict()["model"]["init_layers"] == [0, 1, 1]


def _image_model(vocab: VocabLayout, width: int, seed: int) -> Transformer:
    from mmntp.model.heads import FlowHead, FlowHeadConfig, register_head

    torch.manual_seed(seed)
    model = Transformer(preset("test", vocab.size, continuous_inputs={"image": width}))
    register_head(model, FlowHead(FlowHeadConfig({"width": width, "cond_dim": 64})), "flow")
    return model


def test_a_new_vector_width_starts_its_projection_and_heads_fresh(tmp_path):
    """Cells of another size: the trunk carries over, the image vectors' input projection
    and the heads that write them start fresh instead of failing on their shapes."""
    from mmntp.model.checkpoint import save_model

    vocab = VocabLayout.build(text_size=256)
    save_model(tmp_path / "cells2", _image_model(vocab, 16, seed=0), vocab)
    model = _image_model(vocab, 4, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    counts = init_from_model(model, vocab, tmp_path / "cells2")
    assert counts["resized"] == ["heads.flow", "input_proj.image"]
    old = load_model(tmp_path / "cells2").model.state_dict()
    for name, tensor in model.state_dict().items():
        if name.startswith(("heads.flow.", "input_proj.image.")):
            assert torch.equal(tensor, before[name]), name
        elif not name.startswith(("tok_embeddings", "heads.token")):
            assert torch.equal(tensor, old[name].float()), name
