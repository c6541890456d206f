"""Classifier-free guidance: the one place that mixes a conditional and an unconditional
prediction, and the one place that says what an unset scale means.

Diffusers' guiders are the model: guidance knows nothing of schedulers or heads, and the
heads and schedulers know nothing of guidance beyond calling `guide` / `guided` on the
outputs they already have (token logits, a frame step's logits, a denoiser's velocity or
noise prediction). Which scale a request gets by default is the API's business
(`mmntp.api`'s per-modality table); below it, `guidance_scale(None)` is 1: no guidance.
"""

from __future__ import annotations

import torch

NO_GUIDANCE = 1.0  # u + 1 (c - u) = c: the conditional prediction


def guidance_scale(value: float | None) -> float:
    """A request's scale, with None (not set below the API layer) meaning no guidance."""
    return NO_GUIDANCE if value is None else value


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """uncond + scale * (cond - uncond), rowwise: cond / uncond [R, ...], scale [R] or a
    number. Token logits, frame logits and continuous predictions alike."""
    if isinstance(scale, torch.Tensor):
        scale = scale.reshape(-1, *([1] * (cond.ndim - 1))).to(cond)
    return uncond + scale * (cond - uncond)


def guided(
    cond: torch.Tensor, uncond: torch.Tensor | None, scale: torch.Tensor | None
) -> torch.Tensor:
    """`guide` where some rows may go unguided: uncond or scale None returns cond, and rows
    whose scale is exactly 1 return cond unchanged (u + (c - u) is not bit-equal to c in
    floating point). scale [R]."""
    if uncond is None or scale is None:
        return cond
    s = scale.reshape(-1, *([1] * (cond.ndim - 1))).to(cond)
    return torch.where(s == NO_GUIDANCE, cond, guide(cond, uncond, s))
