"""The job interface: a validated request encoded for the engine.

A job knows its prompt ids, its segment plan and how many rows (sample paths) it runs;
it turns engine requests' step outputs into user-facing chunks and the final result.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch

from mmntp.api import GenerationOutput, OutputSpec, PromptPart, SamplingParams
from mmntp.engine import Request, SegmentPlan
from mmntp.generation.context import ModelContext


@dataclass
class Job:
    ctx: ModelContext
    prompt_ids: list[int]
    segment: SegmentPlan
    sampling: SamplingParams
    rows: int = 1
    uncond_ids: list[int] | None = None  # classifier-free guidance: the unconditional prompt
    # Stream decoding runs a decoder network (images, audio): the server does it off the
    # event loop. A class attribute, not a field.
    heavy_decode: ClassVar[bool] = False

    @classmethod
    def build(
        cls,
        ctx: ModelContext,
        parts: list[PromptPart],
        output: OutputSpec,
        sampling: SamplingParams,
    ) -> Job:
        """Encode a request that `generation.validate` passed: parts, output and sampling
        are checked and complete; only what needs the tokenizers can still fail."""
        raise NotImplementedError

    def requests(
        self,
        tag: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
        owner: str = "",
    ) -> list[Request]:
        """One engine request per row; rows get independent seeds derived from the request's.

        The rows form one group (`tag`): one client request against the engine's waiting
        limits, owned by `owner` (an API key's id) for fair sharing between callers."""
        tag = tag or uuid.uuid4().hex
        if self.rows == 1:
            seeds = [self.sampling.seed]
        else:
            base = self.sampling.seed if self.sampling.seed is not None else uuid.uuid4().int >> 65
            state = np.random.SeedSequence(base).generate_state(self.rows, np.uint64)
            seeds = [int(s) for s in state >> np.uint64(1)]
        return [
            Request(
                f"{tag}-{i}",
                self.prompt_ids,
                self.segment,
                replace(self.sampling, seed=seed),
                priority=priority,
                deadline=deadline,
                uncond_prompt_ids=self.uncond_ids,
                group=tag,
                owner=owner,
            )
            for i, seed in enumerate(seeds)
        ]

    def chunks(
        self,
        step: int,
        ids: torch.Tensor,
        lps: torch.Tensor,
        vectors: list[torch.Tensor | None] | None = None,
    ) -> Iterator:
        """User-facing chunks for output step `step` (ids/logprobs of every row [rows]; for a
        continuous step, each row's vector)."""
        return iter(())

    def flush(self) -> Iterator:
        return iter(())

    def finish(
        self, ids: torch.Tensor, lps: torch.Tensor, reasons: Sequence[str]
    ) -> GenerationOutput:
        """The result from every row's ids/logprobs [rows, T] and each row's finish reason."""
        result = self.output(ids[0].tolist(), lps[0].tolist(), overall_reason(reasons))
        result.prompt_tokens = len(self.prompt_ids)
        result.output_tokens = int(ids.numel())
        return result

    def output(self, ids: list[int], lps: list[float], reason: str) -> GenerationOutput:
        return GenerationOutput("tokens", ids, lps, reason)


def guidance_prompt(sampling: SamplingParams, uncond_prompt: Callable[[], list[int]]):
    """The unconditional prompt ids, or None when the scale is 1: the conditional row
    alone, which needs no shadow row."""
    return uncond_prompt() if sampling.guidance_scale != 1.0 else None


def overall_reason(reasons: Sequence[str]) -> str:
    """One finish reason for all rows: an abnormal end wins, then stop, then length."""
    for reason in ("deadline", "abort", "stop"):
        if reason in reasons:
            return reason
    return "length"
