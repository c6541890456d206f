"""Vectorised sampling over a step's requests, each with its own parameters and generator."""

from __future__ import annotations

import torch

from mmntp.engine.request import Request
from mmntp.model.sampling import (
    RowParams,
    apply_allowed,
    apply_repetition_penalty,
    sample_rows,
    token_logprobs,
)


class Sampler:
    """logits [R, V] + requests -> (ids [R], logprobs [R]).

    Each request draws one uniform per step from its own generator, so its tokens depend
    on its seed only, whatever else shares the batch. Plan masks are built once per
    distinct (spans, ids) and reused.
    """

    def __init__(self, vocab_size: int, device: torch.device | str = "cpu") -> None:
        self.vocab_size, self.device = vocab_size, device
        self._masks: dict[tuple, torch.Tensor] = {}
        self._all = torch.ones(vocab_size, dtype=torch.bool, device=device)

    def mask(self, allowed: tuple | None) -> torch.Tensor:
        if allowed is None:
            return self._all
        cached = self._masks.get(allowed)
        if cached is None:
            spans, ids = allowed
            cached = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
            for lo, hi in spans:
                cached[lo:hi] = True
            if ids:
                cached[list(ids)] = True
            self._masks[allowed] = cached
        return cached

    def sample(
        self, logits: torch.Tensor, requests: list[Request], offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`offset`: how many tokens past its output so far each row samples (frame heads
        draw a frame's tokens in one step), for the plan's per-step constraint."""
        logits = logits.float()
        params = [r.params for r in requests]
        seen = penalty = None
        if any(p.repetition_penalty != 1 for p in params):
            seen = torch.zeros_like(logits, dtype=torch.bool)
            for i, r in enumerate(requests):
                seen[i, r.all_token_ids] = True
            penalty = torch.tensor([p.repetition_penalty for p in params], device=logits.device)
        plans = [r.plan.allowed(len(r.output_ids) + offset) for r in requests]
        span = _one_span(plans)
        if span is not None and seen is None:
            # Every row may only take ids of one span (a forecast's value bins, an image's
            # codes): the same draw over that slice, without sorting the whole vocabulary.
            lo, hi = span
            ids, _ = self.sample_span(logits[:, lo:hi], requests, lo, offset)
            return ids, token_logprobs(logits, ids)  # under the whole distribution, as below
        allowed = None
        if any(p is not None for p in plans):
            allowed = torch.stack([self.mask(p) for p in plans])
        shaped = apply_allowed(apply_repetition_penalty(logits, seen, penalty), allowed)
        uniforms = _uniforms(requests, logits.device)
        if all(p.greedy for p in params):  # argmax; the uniforms are drawn all the same
            ids = shaped.argmax(-1)
        else:
            ids = sample_rows(shaped, RowParams.stack(params, device=logits.device), uniforms)
        return ids, token_logprobs(logits, ids)

    @staticmethod
    def is_plain_greedy(requests: list[Request]) -> bool:
        """Whether `sample` would pick each row's argmax of the raw logits: greedy, no
        repetition penalty, no plan constraint at this step."""
        return all(
            r.params.greedy
            and r.params.repetition_penalty == 1
            and r.plan.allowed(len(r.output_ids)) is None
            for r in requests
        )

    @staticmethod
    def skip_draws(requests: list[Request]) -> None:
        """Advance each row's generator as `sample` would have (a greedy row draws too)."""
        _uniforms(requests, requests[0].generator.device)

    def sample_span(
        self, local: torch.Tensor, requests: list[Request], lo: int, offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample from logits over one id span [lo, lo + width) only (a frame head's step):
        the same draw as `sample` on full-vocabulary logits that are -inf outside the span,
        without building them; with a repetition penalty it falls back to `sample`."""
        rows = RowParams.stack([r.params for r in requests], device=local.device)
        if bool((rows.repetition_penalty != 1).any()):
            full = local.new_full((local.shape[0], self.vocab_size), float("-inf"))
            full[:, lo : lo + local.shape[1]] = local
            return self.sample(full, requests, offset)
        local = local.float()
        ids = sample_rows(local, rows, _uniforms(requests, local.device))
        return ids + lo, token_logprobs(local, ids)


def _one_span(plans: list) -> tuple[int, int] | None:
    """(lo, hi) when every row's constraint is the same single span and no extra ids."""
    first = plans[0]
    if first is None or len(first[0]) != 1 or first[1]:
        return None
    if any(p != first for p in plans):
        return None
    return first[0][0]


def _uniforms(requests: list[Request], device) -> torch.Tensor:
    """One uniform per row from the row's own generator (every step, greedy rows too, so a
    request's later draws never depend on how it was sampled before)."""
    return torch.cat([torch.rand(1, generator=r.generator, device=device) for r in requests])
