"""The token head: hidden states -> logits over the whole vocabulary, and its step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmntp.model.guidance import guide
from mmntp.model.heads.base import StepOutput, StepRows
from mmntp.model.ops import column_major


class TokenHead(nn.Module):
    """Hidden state -> logits over the whole vocabulary (the discrete output head)."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size, bias=False)
        self.column_major_copy = False  # see Transformer.use_decode_layout
        self._copy: tuple[tuple, torch.Tensor] | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.column_major_copy and not torch.is_grad_enabled():
            return F.linear(hidden, self._column_major())
        return self.proj(hidden)

    def decode_weight(self) -> torch.Tensor:
        """The [V, D] weight inference computes logits with (what a compiled decode step
        multiplies by): the column-major copy of a tied weight once the decode layout is
        on, else the projection's own weight."""
        return self._column_major() if self.column_major_copy else self.proj.weight

    def step(self, rows: StepRows) -> StepOutput:
        """The rows' next tokens (`OutputHead`): one vectorised draw over all rows, guided
        rows' logits mixed with their partners' first."""
        reqs, sampler, done = rows.requests, rows.sampler, rows.token_logits
        if done is not None:  # the compiled decode step ran this head in its graph
            if sampler.is_plain_greedy(reqs):
                sampler.skip_draws(reqs)
                return StepOutput(done.greedy_ids, done.greedy_logprobs)
            return StepOutput(*sampler.sample(done.logits, reqs))
        logits = self(rows.hidden)  # [R, V]
        g = rows.guidance
        if g is not None:
            logits[g.rows] = guide(logits[g.rows], self(g.uncond), g.scales)
        return StepOutput(*sampler.sample(logits, reqs))

    def _column_major(self) -> torch.Tensor:
        """A column-major copy of a tied weight, made again whenever the weight changed
        (an optimiser step bumps its version), moved or was cast."""
        w = self.proj.weight
        key = (w._version, w.data_ptr(), w.dtype, w.device)
        if self._copy is None or self._copy[0] != key:
            self._copy = (key, column_major(w.detach()))
        return self._copy[1]
