"""RoPE without transformers: the rotation equals the textbook formula (half-split pairs,
Llama / Hugging Face layout), scores depend on relative position only, and a whole model
forward equals a plain float64 Llama forward written out here from the module's weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmntp.model.config import ModelConfig
from mmntp.model.ops import apply_rope, rope_factors
from mmntp.model.transformer import RopeTable, Transformer


def rotate_reference(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """x [B, T, H, D] rotated pairwise: (x_i, x_{i+D/2}) by angle pos * theta^(-2i/D)."""
    x = x.double()
    d = x.shape[-1]
    half = d // 2
    out = torch.empty_like(x)
    for i in range(half):
        freq = theta ** (-2.0 * i / d)
        angle = positions.double()[..., None] * freq  # [B, T, 1]
        c, s = torch.cos(angle), torch.sin(angle)
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * c - b * s
        out[..., i + half] = a * s + b * c
    return out


@pytest.mark.parametrize(("head_dim", "theta"), [(8, 10000.0), (16, 500.0), (32, 1e6)])
def test_rotation_equals_the_formula(head_dim, theta):
    torch.manual_seed(0)
    positions = torch.tensor([[0, 1, 2, 7, 100, 511]])
    x = torch.randn(1, positions.shape[1], 3, head_dim)
    got = apply_rope(x, *rope_factors(positions, head_dim, theta))
    torch.testing.assert_close(
        got.double(), rotate_reference(x, positions, theta), atol=1e-4, rtol=0
    )
    # position 0 is the identity, and a rotation keeps each pair's norm
    torch.testing.assert_close(got[:, 0], x[:, 0])
    torch.testing.assert_close(got.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_scores_depend_on_relative_position_only():
    torch.manual_seed(1)
    d, theta = 16, 10000.0
    q, k = torch.randn(1, 1, 1, d), torch.randn(1, 1, 1, d)

    def score(pq, pk):
        rq = apply_rope(q, *rope_factors(torch.tensor([[pq]]), d, theta))
        rk = apply_rope(k, *rope_factors(torch.tensor([[pk]]), d, theta))
        return float((rq * rk).sum())

    assert score(5, 3) == pytest.approx(score(105, 103), abs=1e-4)
    assert score(5, 3) == pytest.approx(score(2, 0), abs=1e-4)
    assert score(5, 3) != pytest.approx(score(3, 5), abs=1e-3)  # the sign of the offset counts


def test_table_lookup_equals_fresh_factors_and_past_the_table():
    table = RopeTable(max_len=32, head_dim=8, theta=777.0)
    positions = torch.tensor([[0, 5, 31, 32, 40]])  # the last two past max_len
    cos, sin = table(positions)
    fresh_cos, fresh_sin = rope_factors(positions, 8, 777.0)
    torch.testing.assert_close(cos, fresh_cos, atol=0, rtol=0)
    torch.testing.assert_close(sin, fresh_sin, atol=0, rtol=0)


def _rms(x, w, eps):
    return w.double() * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def llama_reference(model: Transformer, ids: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] of a plain Llama forward in float64 from the module's weights."""
    cfg = model.config
    b, t = ids.shape
    h, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    positions = torch.arange(t)[None].expand(b, t)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    x = model.tok_embeddings.weight.double()[ids]
    for layer in model.layers:
        att = layer.attn
        y = _rms(x, layer.attn_norm.weight, cfg.norm_eps)
        q = (y @ att.q_proj.weight.double().T).view(b, t, h, d)
        k = (y @ att.k_proj.weight.double().T).view(b, t, hkv, d)
        v = (y @ att.v_proj.weight.double().T).view(b, t, hkv, d)
        q = rotate_reference(q, positions, cfg.rope_theta)
        k = rotate_reference(k, positions, cfg.rope_theta)
        k = k.repeat_interleave(h // hkv, dim=2)
        v = v.repeat_interleave(h // hkv, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        scores = scores.masked_fill(~causal, float("-inf"))
        out = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).reshape(b, t, h * d)
        x = x + out @ att.o_proj.weight.double().T
        y = _rms(x, layer.mlp_norm.weight, cfg.norm_eps)
        mlp = layer.mlp
        gate = y @ mlp.gate_proj.weight.double().T
        up = y @ mlp.up_proj.weight.double().T
        x = x + (F.silu(gate) * up) @ mlp.down_proj.weight.double().T
    x = _rms(x, model.norm.weight, cfg.norm_eps)
    return x @ model.heads["token"].proj.weight.double().T


@pytest.mark.parametrize("theta", [10000.0, 300.0])
def test_model_forward_equals_a_plain_llama_forward(theta):
    config = ModelConfig(
        vocab_size=97, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64, rope_theta=theta
    )
    torch.manual_seed(2)
    model = Transformer(config).eval()
    with torch.no_grad():  # non-trivial norm weights so a wrong norm shows too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
        ids = torch.randint(0, 97, (2, 40))
        got = model(ids)
        expected = llama_reference(model, ids)
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=0)
