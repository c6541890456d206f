"""An engine request: prompt elements, sampling parameters, a segment plan, and its state.

The scheduler and the KV cache manager read only the integer fields (ids, counts,
priority, times); vectors travel with the request for the model runner.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from mmntp.api import SamplingParams
from mmntp.api.sampling import neutral
from mmntp.engine.plans import SegmentPlan
from mmntp.model.guidance import guidance_scale

# Requests at this priority or worse are background work (a server's batch jobs): the
# scheduler runs them only in steps with no other work (scheduler.py, "background").
# Key policies stop below it (serve/quotas.py: priorities fit in 32 bits).
BACKGROUND_PRIORITY = 2**31


class QueueFullError(RuntimeError):
    """The waiting queue is at its bound (requests or tokens): retry later (overload).

    `limit_name` is the setting that was hit, `limit` its value and `current` what the
    queue held, so a service can report the real limit.
    """

    def __init__(self, message: str, limit_name: str = "", limit: int = 0, current: int = 0):
        super().__init__(message)
        self.limit_name, self.limit, self.current = limit_name, limit, current


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"  # waiting again after its cache was reclaimed; recomputes
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"
    FINISHED_DEADLINE = "deadline"

    @property
    def finished(self) -> bool:
        return self.value in ("stop", "length", "abort", "deadline")


@dataclass
class PromptVector:
    """A continuous prompt element at sequence position `position`."""

    position: int
    modality: str
    value: torch.Tensor  # [width]


@dataclass
class Request:
    """One generation request and its progress.

    `prompt_ids` has a placeholder id at every position that holds a vector
    (`prompt_vectors`); `output_vectors` likewise for continuous outputs.
    """

    request_id: str
    prompt_ids: list[int]
    plan: SegmentPlan
    params: SamplingParams = field(default_factory=SamplingParams)
    prompt_vectors: list[PromptVector] = field(default_factory=list)
    priority: int = 0  # lower runs first (a server sets it from the caller's key policy)
    deadline: float | None = None  # absolute time.monotonic() after which it is aborted
    arrival_time: float = field(default_factory=time.monotonic)
    # Classifier-free guidance: the prompt without its condition. The engine runs it as a
    # shadow row beside this one and samples from their logits mixed by
    # params.guidance_scale; both rows then get the same token (or vector).
    uncond_prompt_ids: list[int] | None = None
    # Admission: the rows of one client request (sample paths) share a `group` and count
    # as one request against max_waiting_requests (None: the request is its own group);
    # `owner` (an API key's id) is the unit of fair sharing between callers.
    group: str | None = None
    owner: str = ""

    # progress (engine-owned)
    output_ids: list[int] = field(default_factory=list)
    output_logprobs: list[float] = field(default_factory=list)
    output_vectors: dict[int, torch.Tensor] = field(default_factory=dict)  # output step -> vector
    num_computed_tokens: int = 0
    num_preemptions: int = 0
    status: RequestStatus = RequestStatus.WAITING
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    finished_time: float | None = None
    generator: torch.Generator | None = field(default=None, repr=False)
    partner: Request | None = field(default=None, repr=False, compare=False)  # guided pair
    is_shadow: bool = False  # the unconditional row of a guided pair (engine-internal)

    def __post_init__(self) -> None:
        # Requests built below the validation step (tests, benchmarks) get the raw-token
        # sampling defaults; the validation step has filled the modality's already.
        self.params = neutral(self.params)
        validate_request(self)
        self.prompt_ids = [int(i) for i in self.prompt_ids]
        if self.uncond_prompt_ids is not None:
            self.uncond_prompt_ids = [int(i) for i in self.uncond_prompt_ids]
        self.prompt_vectors = sorted(self.prompt_vectors, key=lambda v: v.position)

    # -- views the scheduler uses --------------------------------------------------------

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def max_total_tokens(self) -> int:
        return len(self.prompt_ids) + self.plan.max_tokens

    @property
    def num_cacheable_tokens(self) -> int:
        """Leading tokens identified by their ids alone (no vector): prefix-cacheable."""
        first = len(self.prompt_ids)
        if self.prompt_vectors:
            first = self.prompt_vectors[0].position
        elif self.output_vectors:
            first += min(self.output_vectors)
        return first

    @property
    def group_id(self) -> str:
        """The client request this row belongs to (its own id when it has no group)."""
        return self.group if self.group is not None else self.request_id

    @property
    def guidance_scale(self) -> float:
        return guidance_scale(self.params.guidance_scale)

    @property
    def finish_reason(self) -> str | None:
        return self.status.value if self.status.finished else None


def shadow_of(req: Request) -> Request:
    """The unconditional row of a guided request, linked to it both ways."""
    shadow = Request(
        f"{req.request_id}#uncond",
        req.uncond_prompt_ids,
        req.plan,
        req.params,
        priority=req.priority,
        deadline=req.deadline,
        arrival_time=req.arrival_time,
        group=req.group_id,
        owner=req.owner,
    )
    shadow.is_shadow, shadow.partner, req.partner = True, req, shadow
    return shadow


def validate_request(req: Request) -> None:
    """Raise ValueError naming the field for anything malformed."""
    if not isinstance(req.request_id, str) or not req.request_id:
        raise ValueError("request_id must be a non-empty string")
    if len(req.prompt_ids) == 0:
        raise ValueError("prompt_ids: the prompt is empty")
    if not all(isinstance(i, int) or (hasattr(i, "__index__")) for i in req.prompt_ids):
        raise ValueError("prompt_ids must be integers")
    if not isinstance(req.plan, SegmentPlan):
        raise ValueError(f"plan must be a SegmentPlan, got {type(req.plan).__name__}")
    if not isinstance(req.params, SamplingParams):
        raise ValueError(f"params must be SamplingParams, got {type(req.params).__name__}")
    if not isinstance(req.priority, int):
        raise ValueError(f"priority must be an integer, got {req.priority!r}")
    if req.group is not None and (not isinstance(req.group, str) or not req.group):
        raise ValueError(f"group must be a non-empty string or None, got {req.group!r}")
    if not isinstance(req.owner, str):
        raise ValueError(f"owner must be a string, got {req.owner!r}")
    if req.deadline is not None and not (
        isinstance(req.deadline, (int, float)) and math.isfinite(req.deadline)
    ):
        raise ValueError(f"deadline must be a finite time, got {req.deadline!r}")
    if req.uncond_prompt_ids is not None and len(req.uncond_prompt_ids) == 0:
        raise ValueError("uncond_prompt_ids: the unconditional prompt is empty")
    for i, vec in enumerate(req.prompt_vectors):
        if not 0 <= vec.position < len(req.prompt_ids):
            raise ValueError(f"prompt_vectors[{i}].position {vec.position} is outside the prompt")
        if vec.value.ndim != 1 or not torch.isfinite(vec.value).all():
            raise ValueError(f"prompt_vectors[{i}].value must be a finite 1-D vector")


def check_ids_in_vocab(ids: Sequence[int], vocab_size: int, name: str = "prompt_ids") -> None:
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"{name} must lie in [0, {vocab_size}), got {bad[:5]}")
