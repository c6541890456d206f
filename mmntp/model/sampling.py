"""Sampling: small pure functions from logits to tokens, vectorised over rows.

Every sampled row consumes exactly one uniform number per step from its own generator and
picks its token by inverse CDF over the filtered distribution in a fixed (sorted) order.
So a row's token depends only on its logits, its parameters and its seed — never on what
else is in the batch — and the reference loop and the engine draw identical samples.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

from mmntp.api import SamplingParams
from mmntp.api.sampling import neutral


def make_generator(params: SamplingParams, device: torch.device | str = "cpu") -> torch.Generator:
    """The row's generator, seeded by `params.seed` (a fresh random seed when None)."""
    seed = params.seed if params.seed is not None else secrets.randbits(63)
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class RowParams:
    """Per-row sampling parameters as tensors [R] (built once per step by the caller)."""

    temperature: torch.Tensor
    top_k: torch.Tensor
    top_p: torch.Tensor
    min_p: torch.Tensor
    repetition_penalty: torch.Tensor

    @classmethod
    def stack(cls, params: list[SamplingParams], device=None) -> RowParams:
        params = [neutral(p) for p in params]  # no-op for validated requests

        def col(name, dtype):
            return torch.tensor([getattr(p, name) for p in params], dtype=dtype, device=device)

        return cls(
            col("temperature", torch.float32),
            col("top_k", torch.long),
            col("top_p", torch.float32),
            col("min_p", torch.float32),
            col("repetition_penalty", torch.float32),
        )


def apply_allowed(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Constrained decoding: -inf outside the allowed mask ([V] or [R, V])."""
    if allowed is None:
        return logits
    return logits.masked_fill(~allowed, float("-inf"))


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor | None, penalty: torch.Tensor | None
) -> torch.Tensor:
    """CTRL-style: seen ids' positive logits are divided by the penalty, negative multiplied.

    seen: bool [R, V] of ids in each row's prompt and output; penalty [R].
    """
    if seen is None or bool((penalty == 1).all()):
        return logits
    p = penalty[:, None]
    penalised = torch.where(logits > 0, logits / p, logits * p)
    return torch.where(seen, penalised, logits)


def filtered_sorted_probs(
    logits: torch.Tensor, rows: RowParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Temperature, top-k, top-p, min-p per row -> (probs in descending order, order) [R, V]."""
    scaled = _scaled(logits, rows)
    order = torch.sort(scaled, dim=-1, descending=True, stable=True).indices
    return _filtered(scaled, order, rows)


def leading_filtered_probs(
    logits: torch.Tensor, rows: RowParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """`filtered_sorted_probs`' first C columns [R, C], C >= every row's kept ids: when
    every row has a top-k below the vocabulary, only the kmax largest logits are sorted
    (`torch.topk`), and the columns equal the full sort's bit for bit; else all of them."""
    scaled = _scaled(logits, rows)
    order = _top_k_order(scaled, rows.top_k)
    if order is None:
        order = torch.sort(scaled, dim=-1, descending=True, stable=True).indices
    return _filtered(scaled, order, rows)


def _scaled(logits: torch.Tensor, rows: RowParams) -> torch.Tensor:
    return logits.float() / rows.temperature.clamp_min(1e-6)[:, None]


def _filtered(
    scaled: torch.Tensor, order: torch.Tensor, rows: RowParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities of `scaled` [R, V] at `order` [R, C] (a prefix of the
    descending order), with the filters' dropped ids zeroed."""
    # exp over the unsorted row, normalised once, then gathered: the same numbers whatever
    # part of the order is asked for.
    weights = (scaled - scaled.amax(-1, keepdim=True)).exp()
    weights /= weights.sum(-1, keepdim=True)
    probs = weights.gather(-1, order)
    rank = torch.arange(probs.shape[-1], device=probs.device)[None]
    k = torch.where(rows.top_k > 0, rows.top_k, scaled.shape[-1])[:, None]
    drop = rank >= k
    # top-p: drop a token once the mass before it already reaches p (the top one stays)
    drop |= (probs.cumsum(-1) - probs) >= rows.top_p[:, None]
    drop |= probs < rows.min_p[:, None] * probs[:, :1]
    drop[:, 0] = False
    return probs.masked_fill(drop, 0.0), order


def _top_k_order(scaled: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor | None:
    """The first kmax ids of the stable descending sort of each row [R, kmax], found with
    `torch.topk`; None (sort the whole row) when a row has no top-k below the vocabulary
    or when ties straddle the kmax-th value (then topk's pick among them is arbitrary)."""
    vocab = scaled.shape[-1]
    if not bool(((top_k > 0) & (top_k < vocab)).all()):
        return None
    kmax = int(top_k.max())
    values, ids = torch.topk(scaled, kmax, dim=-1, sorted=False)
    if bool(((scaled >= values.amin(-1, keepdim=True)).sum(-1) != kmax).any()):
        return None
    # Ids ascending, then a stable sort by value: ties keep the full sort's id order.
    ids, by_id = ids.sort(-1)
    values = values.gather(-1, by_id)
    return ids.gather(-1, values.sort(dim=-1, descending=True, stable=True).indices)


def sample_rows(logits: torch.Tensor, rows: RowParams, uniforms: torch.Tensor) -> torch.Tensor:
    """logits [R, V] (already masked/penalised), one uniform in [0, 1) per row -> ids [R].

    Greedy rows (temperature 0) take the argmax and ignore their uniform.
    """
    greedy = rows.temperature == 0
    ids = logits.argmax(-1)
    if bool(greedy.all()):
        return ids
    probs, order = leading_filtered_probs(logits, rows)
    cdf = probs.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1])[:, None]
    # Kept ids are a prefix of `order`: a target rounding up to the total takes the last one.
    last = (probs > 0).sum(-1, keepdim=True) - 1
    pick = torch.searchsorted(cdf, target, right=True).minimum(last)
    sampled = order.gather(-1, pick).squeeze(-1)
    return torch.where(greedy, ids, sampled)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Natural-log probability of ids [R] under the model's raw distribution logits [R, V]."""
    return logits.float().log_softmax(-1).gather(-1, ids[:, None]).squeeze(-1)


# -- single-parameter helpers (tests, simple callers) -----------------------------------


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row [B, V]."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of tokens whose probability reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None,
    allowed: torch.Tensor | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """logits [B, V] -> next ids [B], all rows under one params and one generator."""
    n = logits.shape[0]
    rows = RowParams.stack([params] * n, device=logits.device)
    logits = apply_allowed(
        apply_repetition_penalty(logits.float(), seen, rows.repetition_penalty), allowed
    )
    uniforms = torch.rand(n, generator=generator, device=logits.device)
    return sample_rows(logits, rows, uniforms)
