"""Segment plans: what a request may produce at each step, and when it is done.

A plan is plain Python over integer ids (no tensors): the engine asks it which global id
spans are allowed at output step k (turned into a cached logit mask), whether step k is
a continuous position (a head produces a vector instead of a token), and whether the
output so far is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

TOKEN_HEAD = "token"  # the softmax head every model has
Spans = tuple[tuple[int, int], ...]  # global [lo, hi) id ranges; () = nothing extra


@dataclass(frozen=True)
class SegmentPlan:
    """One output segment.

    `cycle` lists the allowed spans per step, repeating (multi-codebook frames cycle
    through their codebooks' ranges); an empty cycle means unconstrained. `extra_ids`
    are always allowed too (e.g. <eos> for text). `length` fixes the number of steps
    (forecast horizon, frames x codebooks); otherwise the segment ends at a stop id or
    `max_tokens`. `continuous` marks every step as a vector from head `head`, fed back
    at the placeholder id `placeholder`. `frame_head` names a multi-token head that emits
    a whole cycle (one frame: `len(cycle)` tokens) per forward; without it, the token head
    samples the same frames one token per forward (flattened).
    """

    max_tokens: int
    cycle: tuple[Spans, ...] = ()
    extra_ids: tuple[int, ...] = ()
    stop_ids: tuple[int, ...] = ()
    fixed_length: bool = False
    continuous: bool = False
    head: str | None = None
    placeholder: int | None = None
    modality: str = "tokens"
    frame_head: str | None = None
    _stops: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if self.continuous and (self.head is None or self.placeholder is None):
            raise ValueError("a continuous plan needs a head and a placeholder id")
        if self.frame_head is not None and (
            self.continuous or not self.cycle or self.max_tokens % len(self.cycle)
        ):
            raise ValueError("a frame plan needs a cycle and a whole number of frames")
        object.__setattr__(self, "_stops", frozenset(self.stop_ids))

    @property
    def group(self) -> int:
        """Tokens produced per forward: a frame with a frame head, else one."""
        return len(self.cycle) if self.frame_head is not None else 1

    def allowed(self, step: int) -> tuple[Spans, tuple[int, ...]] | None:
        """Allowed (spans, ids) at output step `step`, or None when unconstrained."""
        if not self.cycle:
            return None
        return self.cycle[step % len(self.cycle)], self.extra_ids

    def is_continuous(self, step: int) -> bool:  # noqa: ARG002 - per-step in mixed plans
        return self.continuous

    def head_at(self, step: int) -> str:
        """Name of the head (in `Transformer.heads`) that produces output step `step`:
        the frame head, the continuous head at a continuous step, else the token head."""
        if self.frame_head is not None:
            return self.frame_head
        return self.head if self.is_continuous(step) else TOKEN_HEAD

    def finish_reason(self, output_ids: Sequence[int]) -> str | None:
        """'stop' after a stop id, 'length' at the step limit, else None (go on)."""
        if output_ids and not self.fixed_length and output_ids[-1] in self._stops:
            return "stop"
        if len(output_ids) >= self.max_tokens:
            return "length"
        return None


def free_plan(max_tokens: int, stop_ids: Sequence[int] = ()) -> SegmentPlan:
    """Any id, until a stop id or max_tokens."""
    return SegmentPlan(max_tokens, stop_ids=tuple(stop_ids))


def text_plan(max_tokens: int, text_span: tuple[int, int], eos: int) -> SegmentPlan:
    """Text ids (and <eos>, which ends it), until <eos> or max_tokens."""
    return SegmentPlan(
        max_tokens, cycle=((text_span,),), extra_ids=(eos,), stop_ids=(eos,), modality="text"
    )


def codes_plan(
    length: int, spans_per_step: Sequence[tuple[int, int]], modality: str
) -> SegmentPlan:
    """Exactly `length` codes; step k draws from spans_per_step[k % len] (codebook cycling)."""
    cycle = tuple((span,) for span in spans_per_step)
    return SegmentPlan(length, cycle=cycle, fixed_length=True, modality=modality)


def continuous_plan(length: int, head: str, placeholder: int, modality: str) -> SegmentPlan:
    """Exactly `length` vectors from `head`; each is fed back at id `placeholder`."""
    return SegmentPlan(
        length,
        fixed_length=True,
        continuous=True,
        head=head,
        placeholder=placeholder,
        modality=modality,
    )


def frames_plan(
    frames: int,
    spans_per_step: Sequence[tuple[int, int]],
    modality: str,
    frame_head: str | None = None,
) -> SegmentPlan:
    """Exactly `frames` frames of `len(spans_per_step)` tokens; with `frame_head`, one
    frame per forward, else one token per forward through the token head."""
    cycle = tuple(((int(lo), int(hi)),) for lo, hi in spans_per_step)
    return SegmentPlan(
        frames * len(cycle),
        cycle=cycle,
        fixed_length=True,
        modality=modality,
        frame_head=frame_head,
    )
