"""Iteration-level scheduler (vLLM v1 style): each step, give requests tokens to compute.

There are no prefill and decode phases: a request simply needs
`num_tokens - num_computed_tokens` more tokens computed. Running requests are served first
(in priority, then arrival order), then waiting ones are admitted while the token budget,
the sequence limit and the KV cache allow; a long prompt is spread over several steps.
When blocks run out, the worst running request is preempted and later recomputed.

Admission is fair between owners (API keys): each owner has its own waiting queue, and
the next unit admitted is the best priority level's head of the owner served longest ago
(round robin within a level), so one owner's flood cannot starve another's requests.
The step is fair too (`contended_rows_per_step`, `contended_batched_tokens`): while two or
more owners have work, a step computes at most that many rows and tokens, each split
max-min fairly between the owners (admissions count against the same shares), and each
owner's running rows take turns (least recently scheduled first), so a flood of rows does
not make every step of another owner's small request as slow as the whole flood.
Background work (priority >= BACKGROUND_PRIORITY: a server's batch jobs) only fills
idle steps: while any other unit waits or runs, running background units are preempted
(their KV blocks freed; they recompute later, from the prefix cache when it still holds
their blocks) and waiting ones are not admitted, so an interactive request never shares
a step with batch rows. A step of background work alone computes about
`background_rows_per_step` rows (taking turns), so that the step an arriving interactive
request must wait for is short.
The waiting queue is bounded in client requests (the rows of one `group`, e.g. a
forecast's sample paths and guidance shadows, count once) and in prompt tokens.
Plain Python over integer ids: no tensors.
"""

from __future__ import annotations

import bisect
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from mmntp.engine.kv_cache import KVCacheManager
from mmntp.engine.request import BACKGROUND_PRIORITY, QueueFullError, Request, RequestStatus

_FINISH_STATUS = {"stop": RequestStatus.FINISHED_STOPPED, "length": RequestStatus.FINISHED_LENGTH}


@dataclass
class SchedulerConfig:
    max_num_batched_tokens: int = 512  # token budget per step (decode tokens + prefill chunks)
    max_num_seqs: int = 64  # running requests at most
    max_prefill_chunk: int = 256  # at most this many tokens of one request per step
    max_waiting_requests: int = 256  # bound of the waiting queue (requests)
    max_waiting_tokens: int = 1 << 20  # bound of the waiting queue (sum of prompt tokens)
    # While >= 2 owners have work (rows running or waiting), a step computes at most this
    # many rows, shared fairly between them; 0 = off. One owner: no effect. (The default is
    # EngineConfig's, measured there.)
    contended_rows_per_step: int = 6
    # ... and at most this many tokens (bounds the prefill chunks of such a step).
    contended_batched_tokens: int = 64
    # A step of background work alone (batch jobs) computes about this many rows; 0 = no
    # bound. An interactive request arriving mid-step waits for that step to end.
    background_rows_per_step: int = 4
    # ... and at most this many tokens (0 = max_num_batched_tokens): a batch request's
    # prompt is prefilled in chunks this long, not in one long step.
    background_batched_tokens: int = 32

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            least = 0 if f.name in _MAY_BE_ZERO else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                what = "a non-negative" if least == 0 else "a positive"
                raise ValueError(f"{f.name} must be {what} integer, got {value!r}")


_MAY_BE_ZERO = {
    "contended_rows_per_step",
    "background_rows_per_step",
    "background_batched_tokens",
}
# An owner whose work ended keeps the steps contended this many steps, and at least this
# many seconds, longer: its next request (a client sending one after another) must not
# find a whole full step in its way. Seconds too, because on a loaded machine the client's
# round trip outlasts 8 small steps (measured: B then waited 0.1-0.3 s behind 512-token
# steps of the flood).
LINGER_STEPS = 8
LINGER_SECONDS = 0.5


@dataclass
class _Parked:
    """Background rows kept out of one step: running ones (their KV kept) and waiting ones."""

    running: dict[str, Request] = field(default_factory=dict)
    waiting: dict[str, list[Request]] = field(default_factory=dict)


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

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager, clock=time.monotonic) -> None:
        self.config = config
        self.kv = kv
        self._clock = clock  # for the linger only
        self._queues: dict[str, list[Request]] = {}  # owner -> its waiting rows, by _order
        self._num_waiting = 0  # rows over all queues
        self._waiting_tokens = 0
        self._waiting_groups: dict[str, int] = {}  # group -> its waiting rows
        self._groups: dict[str, list[Request]] = {}  # group -> its live rows (waiting/running)
        self._served: dict[str, int] = {}  # owner -> number of its last admission (per key)
        self._admissions = 0
        self._running: dict[str, Request] = {}
        self._requests: dict[str, Request] = {}  # every waiting or running request
        self._order: dict[str, tuple[int, float, int]] = {}  # (priority, arrival, sequence)
        self._seq = 0
        self._finished_ids: list[str] = []
        self._steps = 0  # schedule() calls
        self._last_run: dict[str, int] = {}  # unit (its first row's id) -> its last step
        self._active: dict[str, tuple[int, float]] = {}  # owner -> last step, time with work

    # -- intake ------------------------------------------------------------------------

    def add_request(self, request: Request) -> None:
        """Queue a request (and its guidance shadow, if it has one) as one unit.

        QueueFullError when the queue is full, ValueError if it can never fit.
        """
        rows = _rows(request)
        rid = request.request_id
        if any(r.request_id in self._requests for r in rows):
            raise ValueError(f"request_id {rid!r} is already in the scheduler")
        if request.status.finished:
            raise ValueError(f"request {rid!r} is already finished ({request.status.value})")
        blocks = sum(-(-r.max_total_tokens // self.kv.block_size) for r in rows)
        if blocks > self.kv.num_blocks:
            raise ValueError(
                f"max_total_tokens {request.max_total_tokens} needs {blocks} KV blocks, "
                f"the whole cache has {self.kv.num_blocks}"
            )
        cfg = self.config
        tokens = sum(r.num_prompt_tokens for r in rows)
        if tokens > cfg.max_waiting_tokens:
            raise ValueError(
                f"prompt of {tokens} tokens exceeds max_waiting_tokens {cfg.max_waiting_tokens}"
            )
        if len(rows) > cfg.max_num_seqs:
            raise ValueError(f"a guided request needs max_num_seqs >= 2, got {cfg.max_num_seqs}")
        group = request.group_id
        queued = len(self._waiting_groups)
        # A row of a request already in the scheduler (another sample path) is part of
        # that request: only a new request counts against max_waiting_requests.
        if group not in self._groups and queued >= cfg.max_waiting_requests:
            raise QueueFullError(
                f"waiting queue is full: {queued} requests waiting "
                f"(max_waiting_requests={cfg.max_waiting_requests})",
                "max_waiting_requests",
                cfg.max_waiting_requests,
                queued,
            )
        if self._waiting_tokens + tokens > cfg.max_waiting_tokens:
            raise QueueFullError(
                f"waiting queue is full: {self._waiting_tokens} prompt tokens waiting, "
                f"{tokens} more asked (max_waiting_tokens={cfg.max_waiting_tokens})",
                "max_waiting_tokens",
                cfg.max_waiting_tokens,
                self._waiting_tokens,
            )
        for row in rows:
            self._requests[row.request_id] = row
            self._groups.setdefault(group, []).append(row)
            self._order[row.request_id] = (row.priority, row.arrival_time, self._seq)
            self._seq += 1
            row.status = RequestStatus.WAITING
            self._push_waiting(row)

    # -- schedule ----------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Pick this step's work: running requests first, then admit waiting ones."""
        out = SchedulerOutput([], 0, [], finished_request_ids=self._finished_ids)
        self._finished_ids = []
        self._steps += 1
        yielded, parked, budget = self._yield_background()
        try:
            room = self._make_room()
            shares = self._fair_shares()
            left = None
            if shares is None:
                budget = self._schedule_running(budget, out)
            else:
                budget, left = self._schedule_running_fair(*shares, out)
            if not out.preempted:
                self._schedule_waiting(budget, out, left)
        finally:
            self._unpark(parked)
        out.preempted[:0] = yielded + room
        return out

    # -- background work (batch jobs) ---------------------------------------------------

    def _yield_background(self) -> tuple[list[str], _Parked, int]:
        """While foreground work waits or runs: preempt the running background units and
        park the waiting background rows for this step. Without foreground work: bound
        the step's background rows (`_cap_background`) and tokens. Returns (preempted ids,
        what was parked for `_unpark`, the step's token budget)."""
        running = [r for r in self._running.values() if not r.is_shadow]
        parked = _Parked()
        foreground = any(r.priority < BACKGROUND_PRIORITY for r in running) or any(
            self._key(q[0])[0] < BACKGROUND_PRIORITY for q in self._queues.values()
        )  # a queue is sorted by priority first: its head is its best row
        budget = self.config.max_num_batched_tokens
        if not foreground:
            self._cap_background(running, parked)
            if running or self._num_waiting:  # a step of background work alone
                budget = min(budget, self.config.background_batched_tokens or budget)
            return [], parked, budget
        yielded = []
        for unit in running:
            if unit.priority >= BACKGROUND_PRIORITY:
                self._preempt(unit)
                yielded.append(unit.request_id)
        self._park_waiting(parked, keep=0)
        return yielded, parked, budget

    def _cap_background(self, running: list[Request], parked: _Parked) -> None:
        """A step of background work alone computes about `background_rows_per_step`
        rows: the running units take turns (least recently run first; the rest keep
        their KV and wait) and only the rows left under the cap may be admitted, so an
        interactive request that arrives mid-step waits for a short step."""
        cap = self.config.background_rows_per_step
        if not cap:
            return
        running.sort(key=lambda u: (self._last_run.get(u.request_id, 0), self._key(u)))
        used = 0
        for unit in running:
            rows = _rows(unit)
            if used and used + len(rows) > cap:
                for row in rows:
                    parked.running[row.request_id] = self._running.pop(row.request_id)
            else:
                used += len(rows)
        self._park_waiting(parked, keep=max(0, cap - used))

    def _park_waiting(self, parked: _Parked, keep: int) -> None:
        """Park each owner's waiting background rows but its first `keep`."""
        for owner, queue in list(self._queues.items()):
            cut = bisect.bisect_left(queue, BACKGROUND_PRIORITY, key=lambda r: self._key(r)[0])
            cut = min(len(queue), cut + keep)
            if cut < len(queue):
                parked.waiting[owner] = queue[cut:]
                del queue[cut:]
                self._num_waiting -= len(parked.waiting[owner])
                if not queue:
                    del self._queues[owner]
                    self._active.pop(owner, None)  # its idle rows must not make steps fair

    def _unpark(self, parked: _Parked) -> None:
        self._running.update(parked.running)
        for owner, rows in parked.waiting.items():
            self._queues.setdefault(owner, []).extend(rows)  # they rank after the rest
            self._num_waiting += len(rows)

    def _schedule_running(self, budget: int, out: SchedulerOutput) -> int:
        # Shadows ride with their partner, so the queue holds one entry per unit.
        queue = sorted((r for r in self._running.values() if not r.is_shadow), key=self._key)
        queue.reverse()  # pop() from the end = next best; queue[0] = worst
        while queue and budget > 0:
            req = queue.pop()
            rows = _rows(req)
            chunks = self._chunks(rows, budget)
            if not any(chunks):
                continue  # a guided pair that cannot both sample within this budget
            # Everything scheduled so far ranks above `req`, so the worst running request
            # is either the worst still unscheduled one or `req` itself.
            while not self._allocate(rows, chunks):
                victim = queue.pop(0) if queue else req
                self._preempt(victim)
                out.preempted.append(victim.request_id)
                if victim is req:
                    return budget
            for row, n in zip(rows, chunks):
                if n:
                    self._add_scheduled(out, row, n)
            budget -= sum(chunks)
        return budget

    # -- fair steps (contended_batched_tokens) ----------------------------------------

    def _fair_shares(self) -> tuple[int, dict[str, tuple[int, int]], dict] | None:
        """The step's token budget, each owner's (rows, tokens) share (running units and
        admissions alike) and its running units in turn order; None when the step is not
        contended (the knob is off, or one owner has had work in the last LINGER_STEPS steps
        and LINGER_SECONDS).

        An owner's demand is what its running units would compute this step, plus its
        waiting units the free slots could take; rows and tokens are each split max-min
        fairly (no owner gets more than it asks; what one leaves goes to the others).
        """
        cfg = self.config
        if not cfg.contended_rows_per_step:
            return None
        units: dict[str, list[Request]] = {}
        for r in self._running.values():
            if not r.is_shadow:
                units.setdefault(r.owner, []).append(r)
        now = self._clock()
        for owner in units.keys() | self._queues.keys():
            self._active[owner] = (self._steps, now)
        self._active = {
            o: (step, at)
            for o, (step, at) in self._active.items()
            if self._steps - step <= LINGER_STEPS or now - at <= LINGER_SECONDS
        }
        recent = list(self._active)
        if len(recent) < 2:
            return None
        budget = min(cfg.contended_batched_tokens, cfg.max_num_batched_tokens)
        rows, tokens = {}, {}
        for owner, own in units.items():
            own.sort(key=lambda u: (self._last_run.get(u.request_id, 0), self._key(u)))
            rows[owner] = sum(len(_rows(u)) for u in own)
            tokens[owner] = sum(self._demand(u) for u in own)
        free = cfg.max_num_seqs - len(self._running)
        for owner, queue in self._queues.items() if free > 0 else ():
            more_rows, more_tokens = self._waiting_demand(queue, free)
            rows[owner] = rows.get(owner, 0) + more_rows
            tokens[owner] = tokens.get(owner, 0) + more_tokens
        rows = _water_fill(rows, cfg.contended_rows_per_step, self._steps)
        tokens = _water_fill(tokens, budget, self._steps)
        shares = {}
        for owner in rows:
            # An owner always moves its next unit (a guided pair needs a token per row).
            nxt = units[owner][0] if owner in units else self._queues[owner][0]
            least = len(_rows(nxt.partner if nxt.is_shadow else nxt))
            shares[owner] = (max(rows[owner], least), max(tokens[owner], least))
        return budget, shares, units

    def _make_room(self) -> list[str]:
        """Under contention, when all max_num_seqs slots are taken and the owner next in
        line to be admitted holds less than its fair share of them (max_num_seqs / owners
        with work), the owner holding the most rows gives up its newest unit(s) (preempted:
        queued again, recomputed later, ahead of newer work). Returns the preempted ids."""
        cfg = self.config
        if not cfg.contended_rows_per_step or not self._queues:
            return []
        head = self._next_waiting()
        unit = head.partner if head.is_shadow else head
        need = len(self._running) + len(_rows(unit)) - cfg.max_num_seqs
        held = Counter(r.owner for r in self._running.values())
        owners = held.keys() | self._queues.keys()
        fair = cfg.max_num_seqs // max(1, len(owners))
        if need <= 0 or len(owners) < 2 or held[head.owner] + len(_rows(unit)) > fair:
            return []
        top = max(held, key=lambda o: (held[o], o))
        newest = sorted(
            (u for u in self._running.values() if u.owner == top and not u.is_shadow),
            key=self._key,
            reverse=True,
        )
        preempted = []
        for victim in newest:
            if need <= 0 or held[top] - len(_rows(victim)) < fair:
                break
            if self._key(victim)[0] < self._key(unit)[0]:
                break  # a better priority level keeps its rows
            self._preempt(victim)
            preempted.append(victim.request_id)
            need -= len(_rows(victim))
            held[top] -= len(_rows(victim))
        return preempted

    def _waiting_demand(self, queue: list[Request], free: int) -> tuple[int, int]:
        """Rows and tokens of an owner's first waiting units that the free slots could take."""
        rows = tokens = 0
        for req in queue:
            if rows >= free:
                break
            if not req.is_shadow:  # a shadow counts with its partner
                rows += len(_rows(req))
                tokens += self._demand(req)
        return rows, tokens

    def _demand(self, unit: Request) -> int:
        return sum(
            min(r.num_tokens - r.num_computed_tokens, self.config.max_prefill_chunk)
            for r in _rows(unit)
        )

    def _schedule_running_fair(
        self,
        budget: int,
        shares: dict[str, tuple[int, int]],
        units: dict[str, list[Request]],
        out: SchedulerOutput,
    ) -> tuple[int, dict[str, list[int]]]:
        """Schedule each owner's running units in turn order within its share; a unit left
        out waits (its KV stays) and goes first next step. Returns the tokens left for
        admissions and each owner's [rows, tokens] left of its share: admissions count
        against the same shares, so a flooding owner's waiting rows do not swell a step
        another owner's rows are in. Out of KV blocks, the worst unit not yet allocated is
        preempted."""
        plan = []
        left = {owner: list(share) for owner, share in shares.items()}
        for owner, own in units.items():
            rows_left, tokens_left = shares[owner]
            for unit in own:
                if rows_left <= 0 or tokens_left <= 0:
                    break
                rows = _rows(unit)
                chunks = self._chunks(rows, tokens_left)
                if len(rows) <= rows_left and any(chunks):
                    plan.append((unit, chunks))
                    rows_left -= len(rows)
                    tokens_left -= sum(chunks)
            left[owner] = [rows_left, tokens_left]
        pending = {u.request_id: u for own in units.values() for u in own}
        used = 0
        for unit, chunks in plan:
            if unit.request_id not in pending:
                continue  # preempted for an earlier unit's blocks
            rows = _rows(unit)
            while not self._allocate(rows, chunks):
                victim = max(pending.values(), key=self._key)
                del pending[victim.request_id]
                self._preempt(victim)
                out.preempted.append(victim.request_id)
                if victim is unit:
                    return 0, left
            del pending[unit.request_id]
            for row, n in zip(rows, chunks):
                if n:
                    self._add_scheduled(out, row, n)
            used += sum(chunks)
        return max(0, budget - used), left

    def _schedule_waiting(
        self, budget: int, out: SchedulerOutput, left: dict[str, list[int]] | None = None
    ) -> None:
        """Admit waiting units while the budget allows; under contention (`left`: each
        owner's [rows, tokens] left of its share) only owners with room in their share."""
        while self._num_waiting and budget > 0:
            room = None if left is None else {o for o, (r, t) in left.items() if r > 0 < t}
            if room is not None and not room & self._queues.keys():
                return
            head = self._next_waiting(room)
            rows = _rows(head.partner if head.is_shadow else head)
            if len(self._running) + len(rows) > self.config.max_num_seqs:
                return
            share = left[head.owner] if left is not None else None
            if share is not None and len(rows) > share[0]:
                return  # a guided pair with one row of share left: next step
            for row in rows:
                row.num_computed_tokens = self.kv.get_computed_blocks(row)
            chunks = self._chunks(rows, budget if share is None else min(budget, share[1]))
            if not any(chunks) or not self._allocate(rows, chunks):
                for row in rows:
                    self.kv.free(row.request_id)
                    row.num_computed_tokens = 0
                return
            for row, n in zip(rows, chunks):
                self._pop_waiting(self._waiting_index(row))
                self._running[row.request_id] = row
                row.status = RequestStatus.RUNNING
                if row.first_scheduled_time is None:
                    row.first_scheduled_time = time.monotonic()
                out.new_request_ids.append(row.request_id)
                if n:
                    self._add_scheduled(out, row, n)
            self._admissions += 1
            self._served[head.owner] = self._admissions
            budget -= sum(chunks)
            if share is not None:
                share[0] -= len(rows)
                share[1] -= sum(chunks)

    def _next_waiting(self, owners: set[str] | None = None) -> Request:
        """The next unit to admit (of `owners` only, if given): best priority level first;
        within a level, the head of the owner whose last admission is oldest (round robin),
        then arrival."""
        best, best_key = None, None
        for owner, queue in self._queues.items():
            if owners is not None and owner not in owners:
                continue
            priority, arrival, seq = self._order[queue[0].request_id]
            key = (priority, self._served.get(owner, 0), arrival, seq)
            if best_key is None or key < best_key:
                best, best_key = queue[0], key
        return best

    def _chunk(self, req: Request, start: int, budget: int) -> int:
        return min(req.num_tokens - start, budget, self.config.max_prefill_chunk)

    def _chunks(self, rows: list[Request], budget: int) -> list[int]:
        """This step's tokens per row of a unit; a guided pair samples together or not at all.

        Each row of a pair gets at most half the budget. If only one row would reach its
        last token, it stops one short (or waits, at 0) until the other catches up, so
        their logits always come from the same forward.
        """
        if len(rows) == 1:
            req = rows[0]
            return [self._chunk(req, req.num_computed_tokens, budget)]
        share = max(1, budget // 2)
        chunks = [self._chunk(r, r.num_computed_tokens, share) for r in rows]
        ends = [r.num_computed_tokens + n == r.num_tokens for r, n in zip(rows, chunks)]
        if all(ends) and sum(chunks) > budget:
            return [0, 0]
        if any(ends) and not all(ends):
            chunks = [n - 1 if end else n for n, end in zip(chunks, ends)]
        return chunks

    def _allocate(self, rows: list[Request], chunks: list[int]) -> bool:
        return all(
            self.kv.allocate_slots(r, r.num_computed_tokens + n) for r, n in zip(rows, chunks)
        )

    def _add_scheduled(self, out: SchedulerOutput, req: Request, n: int) -> None:
        start = req.num_computed_tokens
        table = self.kv.block_table(req.request_id)
        samples = start + n == req.num_tokens
        if not req.is_shadow:
            self._last_run[req.request_id] = self._steps
        out.scheduled.append(ScheduledRequest(req, n, start, table, samples))
        out.num_batched_tokens += n

    def _preempt(self, req: Request) -> None:
        """Free its blocks (and its pair's) and queue it again; it recomputes what it had."""
        self._last_run.pop(req.request_id, None)
        for row in _rows(req):
            del self._running[row.request_id]
            self.kv.free(row.request_id)
            row.num_computed_tokens = 0
            row.status = RequestStatus.PREEMPTED
            row.num_preemptions += 1
            self._push_waiting(row)  # keeps its arrival: ahead of newer requests

    # -- update ------------------------------------------------------------------------

    def update(self, output: SchedulerOutput, sampled: dict[str, tuple[Any, Any]]) -> list[Request]:
        """Apply a step's results; return requests that got tokens or finished.

        `sampled` maps a request id to (token, logprob), or to lists of them for a frame.
        """
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
            tokens, logprobs = sampled[req.request_id]
            if not isinstance(tokens, (list, tuple)):  # one token, or a frame of them
                tokens, logprobs = [tokens], [logprobs]
            reason = None
            for token, logprob in zip(tokens, logprobs):
                req.output_ids.append(int(token))
                req.output_logprobs.append(float(logprob))
                reason = req.plan.finish_reason(req.output_ids)
                if reason is not None:
                    break
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
        if req.is_shadow:
            return self.abort(req.partner.request_id, status)
        for row in _rows(req):
            if self._running.pop(row.request_id, None) is None:
                self._pop_waiting(self._waiting_index(row))
            self._finish(row, status)
        return req

    def expire_deadlines(self, now: float) -> list[Request]:
        """Abort (FINISHED_DEADLINE) every request whose deadline is before `now`."""
        late = [
            r.request_id
            for r in [*self._running.values(), *self._iter_waiting()]
            if r.deadline is not None and r.deadline < now and not r.is_shadow
        ]
        return [self.abort(rid, RequestStatus.FINISHED_DEADLINE) for rid in late]

    def _finish(self, req: Request, status: RequestStatus) -> None:
        self.kv.free(req.request_id)
        self._last_run.pop(req.request_id, None)
        del self._requests[req.request_id]
        group = self._groups[req.group_id]
        group.remove(req)
        if not group:
            del self._groups[req.group_id]
        del self._order[req.request_id]
        req.status = status
        req.finished_time = time.monotonic()
        self._finished_ids.append(req.request_id)

    # -- queue and views ---------------------------------------------------------------

    def _key(self, req: Request) -> tuple[int, float, int]:
        return self._order[req.request_id]

    def _push_waiting(self, req: Request) -> None:
        bisect.insort(self._queues.setdefault(req.owner, []), req, key=self._key)
        self._num_waiting += 1
        self._waiting_tokens += req.num_prompt_tokens
        group = req.group_id
        self._waiting_groups[group] = self._waiting_groups.get(group, 0) + 1

    def _waiting_index(self, req: Request) -> tuple[str, int]:
        queue = self._queues[req.owner]
        return req.owner, bisect.bisect_left(queue, self._key(req), key=self._key)  # unique

    def _pop_waiting(self, where: tuple[str, int]) -> Request:
        owner, index = where
        queue = self._queues[owner]
        req = queue.pop(index)
        if not queue:
            del self._queues[owner]
        self._num_waiting -= 1
        self._waiting_tokens -= req.num_prompt_tokens
        group = req.group_id
        self._waiting_groups[group] -= 1
        if not self._waiting_groups[group]:
            del self._waiting_groups[group]
        return req

    def _iter_waiting(self):
        for queue in self._queues.values():
            yield from queue

    def group_rows(self, group: str) -> list[Request]:
        """The live (waiting or running) rows of a client request (a copy)."""
        return list(self._groups.get(group, ()))

    @property
    def num_waiting(self) -> int:
        """Waiting rows (engine requests)."""
        return self._num_waiting

    @property
    def num_waiting_requests(self) -> int:
        """Waiting client requests: what max_waiting_requests bounds."""
        return len(self._waiting_groups)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def has_unfinished(self) -> bool:
        return bool(self._num_waiting or self._running)

    def get(self, request_id: str) -> Request | None:
        """The waiting or running request with this id, else None."""
        return self._requests.get(request_id)


def _water_fill(demand: dict[str, int], budget: int, turn: int) -> dict[str, int]:
    """Max-min fair split of `budget`: an owner asking less than an equal share gets what
    it asks, the rest share what is left equally; the remainder's odd tokens rotate."""
    shares, left = {}, dict(demand)
    while left:
        fair = budget // len(left)
        small = [owner for owner, d in left.items() if d <= fair]
        if not small:
            break
        for owner in small:
            shares[owner] = left.pop(owner)
            budget -= shares[owner]
    if left:
        fair, extra = divmod(budget, len(left))
        owners = sorted(left)
        k = turn % len(owners)
        for i, owner in enumerate(owners[k:] + owners[:k]):
            shares[owner] = fair + (i < extra)
    return shares


def _rows(req: Request) -> list[Request]:
    """A scheduling unit: the request, then its guidance shadow if it has one."""
    return [req] if req.partner is None else [req, req.partner]
