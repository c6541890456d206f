"""The one per-step interface every output head implements: `OutputHead.step`.

The engine's runner groups a step's sampling rows by the head that produces their next
output (the token head, a frame head, a flow / diffusion head) and hands each group to
`head.step(StepRows(...))`; every head answers with a `StepOutput`. What a head needs
travels in `StepRows`: the rows' hidden states, their requests (sampling parameters and
generators), the engine's token sampler, the guided rows' unconditional hidden states
and scales, and each row's earlier vectors. A head reads what it uses and ignores the
rest; the token head stays one vectorised draw over all its rows.

Nothing here imports the engine: requests are read by duck type (`.params`,
`.generator`), and the sampler is the `TokenSampler` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from mmntp.model.heads.denoiser import above_rows

Vectors = Callable[[int], Sequence["torch.Tensor | None"]]


class TokenSampler(Protocol):
    """Draws tokens with each row's own parameters and generator (the engine's Sampler)."""

    def sample(
        self, logits: torch.Tensor, requests: Sequence[Any], offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-vocabulary logits [R, V] -> (ids [R], logprobs [R])."""
        ...

    def sample_span(
        self, local: torch.Tensor, requests: Sequence[Any], lo: int, offset: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits over ids [lo, lo + width) [R, width] -> (global ids [R], logprobs [R])."""
        ...

    def is_plain_greedy(self, requests: Sequence[Any]) -> bool: ...

    def skip_draws(self, requests: Sequence[Any]) -> None: ...


@dataclass
class Guidance:
    """The rows of a group that have an unconditional partner (classifier-free guidance)."""

    rows: list[int]  # their indices within the group
    uncond: torch.Tensor  # [len(rows), D] the partners' hidden states
    scales: torch.Tensor  # [len(rows)] float32 on the CPU: each request's guidance scale


@dataclass
class StepRows:
    """One head's rows in one engine step."""

    hidden: torch.Tensor  # [R, D] the rows' hidden states (the conditional ones)
    requests: Sequence[Any]  # per row: .params, .generator (and what a sampler reads)
    sampler: TokenSampler
    guidance: Guidance | None = None  # None: no row of the group is guided
    # Each row's vector k positions before the one produced now (None where there is
    # none): `vectors_back(k)`. None: no row has earlier vectors.
    history: Vectors | None = None
    # What the step already computed of the token head for these rows (a compiled decode
    # step runs the head inside its graph): .logits [R, V], .greedy_ids / .greedy_logprobs
    # [R]. None: nothing; the token head computes its logits from `hidden`.
    token_logits: Any = None

    @property
    def generators(self) -> list[torch.Generator | None]:
        return [r.generator for r in self.requests]

    def vectors_back(self, k: int) -> Sequence[torch.Tensor | None]:
        if self.history is None:
            return [None] * len(self.requests)
        return self.history(k)

    def paired(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Guidance for every row: (unconditional hidden states [R, D], scales [R] float32
        on the CPU). An unguided row is its own unconditional row at scale 1, which is
        exactly conditional sampling."""
        g = self.guidance
        uncond = self.hidden.clone()
        scales = torch.ones(self.hidden.shape[0])
        if g is not None:
            uncond[g.rows] = g.uncond
            scales[g.rows] = g.scales
        return uncond, scales


@dataclass
class StepOutput:
    """What a head produced for its rows: tokens (ids and logprobs, [R] or a frame's
    [R, group]) or vectors [R, width]; the engine feeds back a vector at its plan's
    placeholder id."""

    ids: torch.Tensor | None = None
    logprobs: torch.Tensor | None = None
    vectors: torch.Tensor | None = None


@runtime_checkable
class OutputHead(Protocol):
    """An output head the engine can step: its rows' next outputs in one call."""

    def step(self, rows: StepRows) -> StepOutput: ...


class ContinuousHead(Protocol):
    """The smaller contract a vector head may implement instead (a head from outside this
    package): `sample` and, for guidance, `sample_guided`; a nonzero `above` attribute
    asks for `above=` [R, width + 1] (`denoiser.above_rows`) as well. `as_output_head`
    steps it."""

    def sample(
        self, hidden: torch.Tensor, generators: list[torch.Generator], requests: list[Any]
    ) -> torch.Tensor:
        """hidden [R, D] -> vectors [R, width], drawing noise from each row's generator."""
        ...

    def sample_guided(
        self,
        hidden: torch.Tensor,
        hidden_uncond: torch.Tensor,
        scales: torch.Tensor,
        generators: list[torch.Generator],
        requests: list[Any],
    ) -> torch.Tensor:
        """Classifier-free guidance: the head's prediction mixed per row by scales [R]."""
        ...


def continuous_step(head: Any, rows: StepRows) -> StepOutput:
    """`OutputHead.step` of a `ContinuousHead`: its vectors for the rows, guided where a
    row has a partner (the whole group then goes through `sample_guided`, unguided rows at
    scale 1), with the vector `head.above` positions back where the head asks for it."""
    extra = {}
    if getattr(head, "above", 0):
        back = rows.vectors_back(head.above)
        extra["above"] = above_rows(back, head.width, rows.hidden.device)
    if rows.guidance is None:
        vectors = head.sample(rows.hidden, rows.generators, rows.requests, **extra)
    else:
        uncond, scales = rows.paired()
        vectors = head.sample_guided(
            rows.hidden, uncond, scales, rows.generators, rows.requests, **extra
        )
    return StepOutput(vectors=vectors)


class _SteppedContinuousHead:
    def __init__(self, head: ContinuousHead) -> None:
        self.head = head

    def step(self, rows: StepRows) -> StepOutput:
        return continuous_step(self.head, rows)


def as_output_head(head: Any) -> OutputHead:
    """`head` itself when it has `step`; a `ContinuousHead` wrapped to have one."""
    return head if hasattr(head, "step") else _SteppedContinuousHead(head)
