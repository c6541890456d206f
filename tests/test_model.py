"""Trunk equivalences: cached step-by-step decode equals one full forward."""

import pytest
import torch

from mmntp.model.config import ModelConfig, preset
from mmntp.model.transformer import ContinuousInput, Transformer


def _model(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(preset("test", vocab_size=97, **overrides)).eval()


def _incremental(model, ids, chunks, continuous_for=None):
    """Feed ids [B, T] in chunks of the given sizes through one KV cache; logits [B, T, V]."""
    b, t = ids.shape
    cache = model.new_cache(b, max_len=t)
    outs, start = [], 0
    for size in chunks:
        pos = torch.arange(start, start + size).expand(b, size)
        cont = continuous_for(start, start + size) if continuous_for else None
        outs.append(
            model(ids[:, start : start + size], positions=pos, cache=cache, continuous=cont)
        )
        start += size
    assert start == t
    return torch.cat(outs, 1)


@pytest.mark.parametrize("overrides", [{}, {"qk_norm": True}, {"tie_embeddings": False}])
def test_cached_decode_equals_full_forward(overrides):
    model = _model(**overrides)
    ids = torch.randint(0, 97, (3, 24))
    with torch.no_grad():
        full = model(ids)
        stepwise = _incremental(model, ids, [1] * 24)
        chunked = _incremental(model, ids, [5, 1, 11, 7])
    torch.testing.assert_close(stepwise, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)


def test_mixed_ids_and_vectors_cached_equals_full():
    """A fake continuous tokenizer's vectors at some positions; cache path == full path."""
    model = _model(continuous_inputs={"audio": 6})
    ids = torch.randint(0, 97, (2, 16))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 4:9] = True  # five latent frames per row
    mask[1, 12] = True
    values = torch.randn(int(mask.sum()), 6)

    def slice_cont(lo, hi):
        sub = mask[:, lo:hi]
        # rows of `values` that fall in [lo, hi), in row-major order of the mask
        order = torch.zeros_like(mask, dtype=torch.long)
        order[mask] = torch.arange(int(mask.sum()))
        picked = order[:, lo:hi][sub]
        return [ContinuousInput("audio", sub, values[picked])] if sub.any() else None

    with torch.no_grad():
        full = model(ids, continuous=[ContinuousInput("audio", mask, values)])
        stepwise = _incremental(model, ids, [1] * 16, slice_cont)
        chunked = _incremental(model, ids, [3, 7, 6], slice_cont)
        ids_only = model(ids)
    torch.testing.assert_close(stepwise, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=1e-5)
    # the vectors really are used: positions at and after them differ from an id-only pass
    assert not torch.allclose(full[:, 4:], ids_only[:, 4:])
    torch.testing.assert_close(full[:, :4], ids_only[:, :4])


def test_rows_at_different_positions_share_one_forward():
    """Two sequences at different lengths advance in one batched decode step."""
    model = _model()
    a, b = torch.randint(0, 97, (1, 10)), torch.randint(0, 97, (1, 6))
    cache = model.new_cache(2, max_len=16)
    with torch.no_grad():
        # prefill row 0 with 9 tokens and row 1 with 5 (pad row 1's tail onto a junk slot
        # is avoided by giving each row its own positions)
        model(a[:, :9], positions=torch.arange(9)[None], cache=_row_view(cache, 0))
        model(b[:, :5], positions=torch.arange(5)[None], cache=_row_view(cache, 1))
        step = model(
            torch.stack([a[0, 9:10], b[0, 5:6]]),
            positions=torch.tensor([[9], [5]]),
            cache=cache,
        )[:, -1]
        torch.testing.assert_close(step[0], model(a)[0, -1], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(step[1], model(b)[0, -1], atol=1e-5, rtol=1e-5)


def _row_view(cache, row):
    """A one-row cache sharing storage with `cache` (writes land in that row)."""
    view = object.__new__(type(cache))
    view.__dict__.update(cache.__dict__)
    view.k, view.v = cache.k[:, row : row + 1], cache.v[:, row : row + 1]
    view._rows = torch.arange(1)[:, None]
    view._kv_len = 0
    return view


def test_cache_overflow_is_an_error():
    model = _model()
    cache = model.new_cache(1, max_len=4)
    with pytest.raises(ValueError, match="exceeds the KV cache length"):
        model(torch.zeros(1, 5, dtype=torch.long), cache=cache, positions=torch.arange(5)[None])


def test_unknown_continuous_modality_is_an_error():
    model = _model()
    mask = torch.zeros(1, 3, dtype=torch.bool)
    mask[0, 1] = True
    with pytest.raises(ValueError, match="no continuous input for modality 'image'"):
        model(
            torch.zeros(1, 3, dtype=torch.long),
            continuous=[ContinuousInput("image", mask, torch.randn(1, 4))],
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 65, "n_heads": 4}, "not divisible"),
        ({"n_heads": 4, "n_kv_heads": 3}, "multiple of n_kv_heads"),
        ({"n_layers": 0}, "n_layers must be a positive integer"),
        ({"rope_theta": -1.0}, "rope_theta"),
    ],
)
def test_config_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(vocab_size=10, **kwargs)


def test_config_round_trip_and_presets():
    cfg = preset("tiny", vocab_size=4096, qk_norm=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge", vocab_size=10)
    with pytest.raises(ValueError, match="unknown model config fields: bogus"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_tied_embeddings_share_storage():
    model = _model()
    assert model.heads["token"].proj.weight is model.tok_embeddings.weight
    untied = _model(tie_embeddings=False)
    assert untied.heads["token"].proj.weight is not untied.tok_embeddings.weight


def test_fused_projections_match_the_separate_layers_and_follow_their_weights():
    """use_decode_layout stores q/k/v and gate/up as views of one matrix each: inference
    through the fused matmuls gives the same logits bit for bit (with and without a cache),
    an in-place update of one layer is seen, autograd still reaches every layer, and a
    dtype change falls back to the separate layers."""
    for overrides in ({}, {"attention_bias": True}, {"n_kv_heads": 1}):
        model = _model(**overrides)
        ids = torch.randint(0, model.config.vocab_size, (2, 9))
        with torch.no_grad():
            before = model(ids)
            model.use_decode_layout()
            attn, mlp = model.layers[0].attn, model.layers[0].mlp
            assert attn.qkv.current() is attn.qkv and mlp.gate_up.current() is mlp.gate_up
            assert torch.equal(model(ids), before)
            assert torch.equal(
                _incremental(model, ids, [4, 1, 1, 3]), _incremental_separate(model, ids)
            )
            attn.k_proj.weight.mul_(1.5)  # as an optimiser step would: the fused matmul follows
            mlp.up_proj.weight.add_(0.01)
            fused = model(ids)
            for block in model.layers:
                block.attn.qkv = block.mlp.gate_up = None
            assert torch.equal(fused, model(ids))
            assert not torch.equal(fused, before)
    model = _model()
    model.use_decode_layout()
    model(torch.randint(0, 97, (1, 5))).sum().backward()  # grad enabled: the separate layers
    attn = model.layers[0].attn
    assert attn.q_proj.weight.grad is not None and attn.v_proj.weight.grad is not None
    assert model.layers[0].mlp.gate_proj.weight.grad is not None
    model = model.to(torch.float64)  # new storage for every layer: the fused copy is stale
    assert model.layers[0].attn.qkv.current() is None
    model.use_decode_layout()  # fuses again
    mlp = model.layers[1].mlp
    with torch.no_grad():
        assert mlp.gate_up.current() is mlp.gate_up
        mlp.up_proj.weight = torch.nn.Parameter(mlp.up_proj.weight.detach().clone())
        assert mlp.gate_up.current() is None  # a new Parameter: the separate layers again
    with torch.no_grad():
        model(torch.randint(0, 97, (1, 5)))


def _incremental_separate(model, ids):
    """`_incremental` with the fused copies switched off for the call."""
    saved = [(b.attn.qkv, b.mlp.gate_up) for b in model.layers]
    for block in model.layers:
        block.attn.qkv = block.mlp.gate_up = None
    try:
        return _incremental(model, ids, [4, 1, 1, 3])
    finally:
        for block, (qkv, gate_up) in zip(model.layers, saved):
            block.attn.qkv, block.mlp.gate_up = qkv, gate_up


def test_decode_layout_keeps_values_and_logits(tmp_path):
    """use_decode_layout re-lays the untied head column-major: same values and shape, logits
    equal to within float rounding, idempotent, and a saved checkpoint loads back equal."""
    from mmntp.model.checkpoint import load_model, save_model
    from mmntp.model.vocab import VocabLayout

    model = _model(tie_embeddings=False).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 9))
    before = model(ids)
    w = model.heads["token"].proj.weight
    values = w.detach().clone()
    model.use_decode_layout()
    model.use_decode_layout()
    assert w is model.heads["token"].proj.weight and w.stride(0) == 1 and w.shape == values.shape
    assert torch.equal(w, values)
    torch.testing.assert_close(model(ids), before, rtol=1e-5, atol=1e-5)
    mlp = model.layers[0].mlp  # widening trunk layers go column-major, narrowing ones not
    assert mlp.gate_proj.weight.stride(0) == 1 and mlp.up_proj.weight.stride(0) == 1
    assert mlp.down_proj.weight.is_contiguous()
    assert model.layers[0].attn.q_proj.weight.is_contiguous()

    tied = _model().eval()
    before = tied(ids)
    tied.use_decode_layout()
    assert tied.heads["token"].proj.weight.is_contiguous()  # the embedding's rows
    with torch.no_grad():
        torch.testing.assert_close(tied(ids), before, rtol=1e-5, atol=1e-5)
        tied.tok_embeddings.weight.mul_(2.0)  # as an optimiser step would: the copy follows
        live = torch.nn.functional.linear(tied.hidden_states(ids), tied.tok_embeddings.weight)
        torch.testing.assert_close(tied(ids), live, rtol=1e-5, atol=1e-5)
    with torch.enable_grad():  # training uses the live, tied weight
        tied(ids).sum().backward()
    assert tied.tok_embeddings.weight.grad is not None

    vocab = VocabLayout.build(text_size=256)
    model = Transformer(preset("test", vocab_size=vocab.size, tie_embeddings=False)).eval()
    values = model.heads["token"].proj.weight.detach().clone()
    model.use_decode_layout()
    save_model(tmp_path / "m", model, vocab)
    again = load_model(tmp_path / "m").model
    assert torch.equal(again.heads["token"].proj.weight, values)


def test_flat_trunk_equals_the_module_path_and_steps_aside_when_stale(monkeypatch):
    """At inference after use_decode_layout the layers run as one FlatTrunk loop: the same
    logits bit for bit as the modules (full forward and cached chunks, GQA, biases), and
    the module path again once a weight is replaced, a fused layout dropped, or autograd on."""
    from mmntp.model.flat_trunk import FlatTrunk

    calls = []
    loop = FlatTrunk.__call__
    monkeypatch.setattr(FlatTrunk, "__call__", lambda self, *a: calls.append(1) or loop(self, *a))
    for overrides in ({}, {"attention_bias": True}, {"n_kv_heads": 1}):
        model = _model(**overrides)
        ids = torch.randint(0, model.config.vocab_size, (2, 9))
        model.use_decode_layout()
        flat = model._flat
        with torch.no_grad():
            assert flat is not None and flat.current() is flat
            through_flat = (model(ids), _incremental(model, ids, [4, 1, 1, 3]))
            assert len(calls) == 5  # the full forward and the four cached chunks
            model._flat = None
            through_modules = (model(ids), _incremental(model, ids, [4, 1, 1, 3]))
            model._flat = flat
            assert len(calls) == 5
        assert all(torch.equal(a, b) for a, b in zip(through_flat, through_modules))
        with torch.no_grad():
            model.layers[1].mlp_norm.weight.mul_(1.5)  # in place, as an optimiser step: seen
            assert flat.current() is flat
            moved = model(ids)
            model._flat = None
            assert torch.equal(moved, model(ids)) and not torch.equal(moved, through_flat[0])
            model._flat = flat
        assert flat.current() is None  # grad enabled: the modules
        calls.clear()
        model(ids)
        assert not calls
    model = _model()
    model.use_decode_layout()
    flat = model._flat
    with torch.no_grad():
        norm = model.layers[0].attn_norm
        norm.weight = torch.nn.Parameter(norm.weight.detach() * 2)
        assert flat.current() is None  # a new Parameter the loop does not hold
        model(torch.randint(0, 97, (1, 5)))
        assert not calls  # the forward took the modules
        model.use_decode_layout()
        assert model._flat.current() is model._flat
        model.layers[-1].attn.qkv = None  # a dropped fused layout
        assert model._flat.current() is None
    assert _model(qk_norm=True)._flat is None
    qk = _model(qk_norm=True)
    qk.use_decode_layout()
    assert qk._flat is None  # QK-norm layers keep separate q/k/v: no flat loop
