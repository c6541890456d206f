"""The committed card folders under tokenizers/ load, and match what the code writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmntp.tokenizers import (
    BUILTIN_CARDS,
    ByteTokenizer,
    MeanScaleUniformBins,
    load_tokenizer,
    register_tokenizer,
    registered_types,
    write_builtin_cards,
)
from mmntp.tokenizers.base import DiscreteTokenizer

CARDS = Path(__file__).resolve().parents[1] / "tokenizers"


@pytest.mark.parametrize("name", sorted(BUILTIN_CARDS))
def test_committed_card_loads_and_matches_fresh(name: str) -> None:
    build, _ = BUILTIN_CARDS[name]
    fresh = build()
    loaded = load_tokenizer(CARDS / name)
    assert type(loaded) is build
    assert loaded.config() == fresh.config()
    assert loaded.tensors().keys() == fresh.tensors().keys()
    for key, tensor in fresh.tensors().items():
        assert torch.equal(loaded.tensors()[key], tensor), key
    assert sorted(p.name for p in (CARDS / name).iterdir()) == [
        "CARD.md",
        "config.json",
        "tokenizer.safetensors",
    ]


@pytest.mark.parametrize("name", sorted(BUILTIN_CARDS))
def test_committed_card_is_reproducible(name: str, tmp_path: Path) -> None:
    """Regenerating the cards gives the committed config and card text."""
    write_builtin_cards(tmp_path)
    for file in ("config.json", "CARD.md"):
        assert (tmp_path / name / file).read_text() == (CARDS / name / file).read_text(), file


def test_committed_configs() -> None:
    assert json.loads((CARDS / "text-bytes" / "config.json").read_text()) == {
        "type": "text_bytes",
        "modality": "text",
        "kind": "discrete",
    }
    assert json.loads((CARDS / "chronos-4096" / "config.json").read_text()) == {
        "type": "chronos_bins",
        "modality": "timeseries",
        "kind": "discrete",
        "n_tokens": 4096,
        "n_special": 2,
        "low": -15.0,
        "high": 15.0,
    }
    tok = load_tokenizer(CARDS / "chronos-4096")
    assert isinstance(tok, MeanScaleUniformBins) and tok.sample_range == (3, 4096)
    assert isinstance(load_tokenizer(CARDS / "text-bytes"), ByteTokenizer)


def test_registry_knows_builtin_types() -> None:
    assert {"text_bytes", "text_hf", "chronos_bins"} <= set(registered_types())


def test_register_rejects_clash_and_missing_name() -> None:
    class Clash(ByteTokenizer):
        type_name = "text_bytes"

    with pytest.raises(ValueError, match="already registered"):
        register_tokenizer(Clash)

    class Nameless(DiscreteTokenizer):
        pass

    with pytest.raises(ValueError, match="type_name"):
        register_tokenizer(Nameless)


def test_auto_card(tmp_path: Path) -> None:
    ByteTokenizer().save(tmp_path)
    card = (tmp_path / "CARD.md").read_text()
    assert card.startswith("# text_bytes") and '"type": "text_bytes"' in card


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_tokenizer(tmp_path)
    config = tmp_path / "config.json"
    config.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_tokenizer(tmp_path)
    config.write_text('{"modality": "text"}')
    with pytest.raises(ValueError, match='no "type" key'):
        load_tokenizer(tmp_path)
    config.write_text('{"type": "nope"}')
    with pytest.raises(ValueError, match="unknown tokenizer type 'nope'"):
        load_tokenizer(tmp_path)
    config.write_text('{"type": "text_bytes", "modality": "audio"}')
    with pytest.raises(ValueError, match="modality 'audio' does not match"):
        load_tokenizer(tmp_path)
    config.write_text('{"type": "text_bytes"}')
    with pytest.raises(FileNotFoundError, match="has no tokenizer.safetensors"):
        load_tokenizer(tmp_path)


def test_save_rejects_reserved_config_keys(tmp_path: Path) -> None:
    class Bad(ByteTokenizer):
        def config(self) -> dict:
            return {"type": "x"}

    with pytest.raises(ValueError, match="must not contain"):
        Bad().save(tmp_path)


def test_a_loaded_card_saves_with_its_own_text_a_new_tokenizer_with_the_generic_one(tmp_path):
    """A model export re-saves its tokenizers: the real card travels, not a stub."""
    loaded = load_tokenizer(CARDS / "audio-cochlear-16k-v2")
    loaded.save(tmp_path / "copy")
    source = (CARDS / "audio-cochlear-16k-v2" / "CARD.md").read_text()
    assert (tmp_path / "copy" / "CARD.md").read_text() == source
    loaded.save(tmp_path / "told", card="# mine\n")
    assert (tmp_path / "told" / "CARD.md").read_text() == "# mine\n"
    ByteTokenizer().save(tmp_path / "new")
    assert (tmp_path / "new" / "CARD.md").read_text().startswith("# text_bytes")


def test_model_tokenizers_build_on_first_use_and_bad_cards_fail_at_load(tmp_path):
    """A model folder's tokenizers are checked when it loads but built when first looked
    up (the image-latent card alone costs seconds of imports); membership builds nothing,
    a second lookup returns the same object, and a malformed card still fails the load."""
    import shutil

    from mmntp.generation import default_service_dir
    from mmntp.model.checkpoint import LazyTokenizers, load_model

    model_dir = default_service_dir() / "model"
    bundle = load_model(model_dir)
    toks = bundle.tokenizers
    assert isinstance(toks, LazyTokenizers) and not toks._built
    assert "image_latent" in toks and "video" not in toks and not toks._built
    series = toks["timeseries"]
    assert toks["timeseries"] is series and set(toks._built) == {"timeseries"}
    assert set(toks) == {"audio", "image", "image_latent", "text", "timeseries"}

    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    config = broken / "tokenizers" / "image_latent" / "config.json"
    config.write_text(config.read_text().replace('"type": "image_kl"', '"type": "nope"'))
    with pytest.raises(ValueError, match="unknown tokenizer type 'nope'"):
        load_model(broken)
