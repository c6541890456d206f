"""Iteration-level scheduler (vLLM v1 style): each step, give requests tokens to compute.

There are no prefill and decode phases: a request simply needs
`num_tokens - num_computed_tokens` more tokens computed. Running requests are served first
(in priority, then arrival order), then waiting ones are admitted while the token budget,
the sequence limit and the KV cache allow; a long prompt is spread over several steps.
When blocks run out, the worst running request is preempted and later recomputed.
Plain Python over integer ids: no tensors.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field, fields

from mmntp.engine.kv_cache import KVCacheManager
from mmntp.engine.request import QueueFullError, Request, RequestStatus

_FINISH_STATUS = {"stop": RequestStatus.FINISHED_STOPPED, "length": RequestStatus.FINISHED_LENGTH}


@dataclass
class SchedulerConfig:
    max_num_batched_tokens: int = 512  # token budget per step (decode tokens + prefill chunks)
    max_num_seqs: int = 64  # running requests at most
    max_prefill_chunk: int = 256  # at most this many tokens of one request per step
    max_waiting_requests: int = 256  # bound of the waiting queue (requests)
    max_waiting_tokens: int = 1 << 20  # bound of the waiting queue (sum of prompt tokens)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value!r}")


@dataclass
class ScheduledRequest:
    request: Request
    num_tokens: int  # tokens computed for it this step: positions start .. start + num_tokens
    start: int  # request.num_computed_tokens when scheduled
    block_table: list[int]
    samples: bool  # the chunk reaches the end of all_token_ids: a token is sampled after it


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest]
    num_batched_tokens: int
    preempted: list[str]  # request ids preempted during this schedule() call
    new_request_ids: list[str] = field(default_factory=list)  # admitted from waiting this step
    finished_request_ids: list[str] = field(default_factory=list)  # ended since last schedule()


class Scheduler:
    """Decides, each step, which requests compute how many tokens."""

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager) -> None:
        self.config = config
        self.kv = kv
        self._waiting: list[Request] = []  # sorted by _order
        self._waiting_tokens = 0
        self._running: dict[str, Request] = {}
        self._requests: dict[str, Request] = {}  # every waiting or running request
        self._order: dict[str, tuple[int, float, int]] = {}  # (priority, arrival, sequence)
        self._seq = 0
        self._finished_ids: list[str] = []

    # -- intake ------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue a request; QueueFullError when the queue is full, ValueError if it never fits."""
        rid = request.request_id
        if rid in self._requests:
            raise ValueError(f"request_id {rid!r} is already in the scheduler")
        if request.status.finished:
            raise ValueError(f"request {rid!r} is already finished ({request.status.value})")
        blocks = -(-request.max_total_tokens // self.kv.block_size)
        if blocks > self.kv.num_blocks:
            raise ValueError(
                f"max_total_tokens {request.max_total_tokens} needs {blocks} KV blocks, "
                f"the whole cache has {self.kv.num_blocks}"
            )
        cfg = self.config
        if request.num_prompt_tokens > cfg.max_waiting_tokens:
            raise ValueError(
                f"prompt of {request.num_prompt_tokens} tokens exceeds "
                f"max_waiting_tokens {cfg.max_waiting_tokens}"
            )
        if len(self._waiting) >= cfg.max_waiting_requests:
            raise QueueFullError(f"waiting queue holds max_waiting_requests={len(self._waiting)}")
        if self._waiting_tokens + request.num_prompt_tokens > cfg.max_waiting_tokens:
            raise QueueFullError(
                f"waiting queue holds {self._waiting_tokens} prompt tokens "
                f"(max_waiting_tokens={cfg.max_waiting_tokens})"
            )
        self._requests[rid] = request
        self._order[rid] = (request.priority, request.arrival_time, self._seq)
        self._seq += 1
        request.status = RequestStatus.WAITING
        self._push_waiting(request)

    # -- schedule ----------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Pick this step's work: running requests first, then admit waiting ones."""
        out = SchedulerOutput([], 0, [], finished_request_ids=self._finished_ids)
        self._finished_ids = []
        budget = self._schedule_running(self.config.max_num_batched_tokens, out)
        if not out.preempted:
            self._schedule_waiting(budget, out)
        return out

    def _schedule_running(self, budget: int, out: SchedulerOutput) -> int:
        queue = sorted(self._running.values(), key=self._key)  # best first
        queue.reverse()  # pop() from the end = next best; queue[0] = worst
        while queue and budget > 0:
            req = queue.pop()
            n = self._chunk(req, req.num_computed_tokens, budget)  # >= 1 between updates
            # Everything scheduled so far ranks above `req`, so the worst running request
            # is either the worst still unscheduled one or `req` itself.
            while not self.kv.allocate_slots(req, req.num_computed_tokens + n):
                victim = queue.pop(0) if queue else req
                self._preempt(victim)
                out.preempted.append(victim.request_id)
                if victim is req:
                    return budget
            self._add_scheduled(out, req, n)
            budget -= n
        return budget

    def _schedule_waiting(self, budget: int, out: SchedulerOutput) -> None:
        while self._waiting and budget > 0 and len(self._running) < self.config.max_num_seqs:
            req = self._waiting[0]
            req.num_computed_tokens = self.kv.get_computed_blocks(req)
            n = self._chunk(req, req.num_computed_tokens, budget)
            if not self.kv.allocate_slots(req, req.num_computed_tokens + n):
                self.kv.free(req.request_id)
                req.num_computed_tokens = 0
                return
            self._pop_waiting(0)
            self._running[req.request_id] = req
            req.status = RequestStatus.RUNNING
            if req.first_scheduled_time is None:
                req.first_scheduled_time = time.monotonic()
            out.new_request_ids.append(req.request_id)
            self._add_scheduled(out, req, n)
            budget -= n

    def _chunk(self, req: Request, start: int, budget: int) -> int:
        return min(req.num_tokens - start, budget, self.config.max_prefill_chunk)

    def _add_scheduled(self, out: SchedulerOutput, req: Request, n: int) -> None:
        start = req.num_computed_tokens
        table = self.kv.block_table(req.request_id)
        samples = start + n == req.num_tokens
        out.scheduled.append(ScheduledRequest(req, n, start, table, samples))
        out.num_batched_tokens += n

    def _preempt(self, req: Request) -> None:
        """Free its blocks and queue it again; it recomputes prompt and output so far."""
        del self._running[req.request_id]
        self.kv.free(req.request_id)
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self._push_waiting(req)  # keeps its arrival: ahead of newer requests of its priority

    # -- update ------------------------------------------------------------------------

    def update(
        self, output: SchedulerOutput, sampled: dict[str, tuple[int, float]]
    ) -> list[Request]:
        """Apply a step's results; return requests that got a token or finished."""
        changed = []
        for s in output.scheduled:
            req = s.request
            if self._running.get(req.request_id) is not req:
                continue  # aborted or expired between schedule() and update()
            req.num_computed_tokens += s.num_tokens
            self.kv.cache_blocks(req, req.num_computed_tokens)
            if not s.samples:
                continue
            if req.request_id not in sampled:
                raise ValueError(f"sampled has no token for request {req.request_id!r}")
            token, logprob = sampled[req.request_id]
            req.output_ids.append(int(token))
            req.output_logprobs.append(float(logprob))
            reason = req.plan.finish_reason(req.output_ids)
            if reason is not None:
                del self._running[req.request_id]
                self._finish(req, _FINISH_STATUS[reason])
            changed.append(req)
        return changed

    def abort(self, request_id: str, status=RequestStatus.FINISHED_ABORTED) -> Request | None:
        """End a waiting or running request now and free its blocks (None if unknown)."""
        if not status.finished:
            raise ValueError(f"status must be a finished status, got {status}")
        req = self._requests.get(request_id)
        if req is None:
            return None
        if self._running.pop(request_id, None) is None:
            self._pop_waiting(bisect.bisect_left(self._waiting, self._key(req), key=self._key))
        self._finish(req, status)
        return req

    def expire_deadlines(self, now: float) -> list[Request]:
        """Abort (FINISHED_DEADLINE) every request whose deadline is before `now`."""
        late = [
            r.request_id
            for r in [*self._running.values(), *self._waiting]
            if r.deadline is not None and r.deadline < now
        ]
        return [self.abort(rid, RequestStatus.FINISHED_DEADLINE) for rid in late]

    def _finish(self, req: Request, status: RequestStatus) -> None:
        self.kv.free(req.request_id)
        del self._requests[req.request_id]
        del self._order[req.request_id]
        req.status = status
        req.finished_time = time.monotonic()
        self._finished_ids.append(req.request_id)

    # -- queue and views ---------------------------------------------------------------

    def _key(self, req: Request) -> tuple[int, float, int]:
        return self._order[req.request_id]

    def _push_waiting(self, req: Request) -> None:
        bisect.insort(self._waiting, req, key=self._key)
        self._waiting_tokens += req.num_prompt_tokens

    def _pop_waiting(self, index: int) -> Request:
        req = self._waiting.pop(index)
        self._waiting_tokens -= req.num_prompt_tokens
        return req

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def has_unfinished(self) -> bool:
        return bool(self._waiting or self._running)

    def get(self, request_id: str) -> Request | None:
        """The waiting or running request with this id, else None."""
        return self._requests.get(request_id)
