"""The trunk's elementwise kernels and weight layout, shared by the modules
(`transformer.py`), the flat decode loop (`flat_trunk.py`) and the token head."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm of x over its last dim, scaled by weight (shared by `RMSNorm` and `FlatTrunk`)."""
    if x.dtype == weight.dtype == torch.float32 and not torch.is_grad_enabled():
        # Inference in fp32: the weight inside the same fused op (bitwise equal to the
        # product below on this CPU; two dispatches fewer per norm on the decode path).
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    # Normalise in fp32 whatever the activation dtype (stability under autocast);
    # F.rms_norm is one fused op where pow/mean/rsqrt/mul were four.
    x32 = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * x32.to(x.dtype)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for integer positions [B, T] -> two tensors [B, T, head_dim]."""
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # [B, T, head_dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # half-split layout, as in Hugging Face Llama
    return emb.cos(), emb.sin()


def rope_factors(
    positions: torch.Tensor, head_dim: int, theta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """What `apply_rope` multiplies by: cos and a signed sin, both [B, T, 1, head_dim].

    Rotating the half-split pair (x1, x2) is x * cos + (-x2, x1) * sin; with the sign
    folded into the table's first half that is x * cos + roll(x) * signed_sin, one op
    fewer per call than negating and concatenating halves, and bitwise the same.
    """
    cos, sin = rope_cos_sin(positions, head_dim, theta)
    half = head_dim // 2
    signed = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    return cos[:, :, None], signed[:, :, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, T, H, Dh] by the `rope_factors` cos / signed sin [B, T, 1, Dh]."""
    if cos.dtype != x.dtype:  # bf16 activations under autocast rotate in bf16
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


def column_major(w: torch.Tensor) -> torch.Tensor:
    """The same values and shape as w [out, in], stored transposed (stride (1, out))."""
    return w.t().contiguous().t()
