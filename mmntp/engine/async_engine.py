"""AsyncEngine: a background loop around Engine.step() with async streaming per request.

Steps run in a worker thread so the event loop stays free for the service. The engine is
only mutated from the event loop between steps: new requests and aborts queue up and are
applied before the next step, so no lock is held while the model runs.

Supervision: an exception from a step (or from the loop's own bookkeeping) kills the
engine for good. Its state (KV cache, scheduler queues) may be half-updated, so nothing is
retried: `dead` holds the cause, every in-flight and queued request fails with
EngineFailedError("engine failed: <reason>"), later `generate` calls fail the same way at
once, and the `on_failure` callbacks run (the server turns readiness NOT_SERVING and exits
non-zero so that its supervisor restarts the process; see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from mmntp.engine.engine import Engine, RequestOutput
from mmntp.engine.request import BACKGROUND_PRIORITY, Request


class EngineFailedError(RuntimeError):
    """The engine loop died: no request can run until the process is restarted."""

    def __init__(self, cause: BaseException) -> None:
        self.cause = cause
        self.reason = f"{type(cause).__name__}: {cause}"
        super().__init__(f"engine failed: {self.reason}")


@dataclass
class _Collector:
    """One slot per request: a slow consumer gets merged deltas, never an unbounded queue."""

    owner: str = ""  # the request's owner, for `abort_owner`
    slot: RequestOutput | None = None
    error: BaseException | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, out: RequestOutput) -> None:
        self.slot = out if self.slot is None else self.slot.merge(out)
        self.ready.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ready.set()

    async def get(self) -> RequestOutput:
        await self.ready.wait()
        self.ready.clear()
        if self.error is not None:
            raise self.error
        out, self.slot = self.slot, None
        return out


class AsyncEngine:
    """`async for out in engine.generate(request)` streams that request's deltas."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._collectors: dict[str, _Collector] = {}
        self._adds: list[tuple[Request, asyncio.Future]] = []
        self._aborts: list[str] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.dead: BaseException | None = None  # set if a step raised: health should fail
        # Called once, on the event loop, with the cause when the engine dies.
        self.on_failure: list[Callable[[BaseException], None]] = []
        # Foreground (interactive) requests in flight; background work (batch jobs)
        # waits for `foreground_idle` before it queues more (see `wait_foreground_idle`).
        self.num_foreground = 0
        self._foreground_idle = asyncio.Event()
        self._foreground_idle.set()
        # Background rows do not step until this many seconds after the last foreground
        # request ended: a burst of interactive requests, one after another, then never
        # waits behind a batch step (0 = batch steps resume at once).
        self.background_delay = 0.0
        self._foreground_ended = -math.inf

    @property
    def stats(self):
        return self.engine.stats

    async def start(self) -> None:
        if self._task is not None and self._task.get_loop() is not asyncio.get_running_loop():
            # One engine, one loop: two loops would step the same engine concurrently.
            raise RuntimeError(
                "this AsyncEngine runs on another event loop (one pipeline per server)"
            )
        if self._task is None:
            # Events belong to the loop that first waits on them: made anew per loop.
            self._foreground_idle = asyncio.Event()
            if not self.num_foreground:
                self._foreground_idle.set()
            self._wakeup = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="mmntp-engine-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def generate(self, request: Request) -> AsyncIterator[RequestOutput]:
        """Queue `request` and yield its outputs until it finishes.

        Raises ValueError / QueueFullError from the engine's intake on the first
        iteration, EngineFailedError once the engine has died (before or during the
        request). Cancelling the consumer (or closing the iterator) aborts the request
        within one step and frees its cache.
        """
        if self.dead is not None:
            raise EngineFailedError(self.dead)
        await self.start()
        foreground = request.priority < BACKGROUND_PRIORITY
        if foreground:
            self.num_foreground += 1
            self._foreground_idle.clear()
        collector = _Collector(request.owner)
        accepted = asyncio.get_running_loop().create_future()
        self._collectors[request.request_id] = collector
        self._adds.append((request, accepted))
        self._wakeup.set()
        finished = False
        try:
            await accepted
            while not finished:
                out = await collector.get()
                finished = out.finished
                yield out
        finally:
            if foreground:
                self.num_foreground -= 1
                if not self.num_foreground:
                    self._foreground_ended = time.monotonic()
                    self._foreground_idle.set()
            self._collectors.pop(request.request_id, None)
            if not finished and accepted.done() and accepted.exception() is None:
                self._aborts.append(request.request_id)
                self._wakeup.set()

    async def wait_foreground_idle(self) -> None:
        """Return once no foreground request is in flight. Background work calls it
        before queueing a request, so that interactive requests find the queue short;
        the scheduler keeps what is already queued out of their steps."""
        await self.start()
        await self._foreground_idle.wait()

    def abort(self, request_id: str) -> None:
        self._aborts.append(request_id)
        if self._wakeup is not None:
            self._wakeup.set()

    def abort_owner(self, owner: str) -> int:
        """Abort every request of `owner`, queued or running, before the next step ->
        how many. A batch's cancel calls it first thing: closing each stream also aborts,
        but only once its consumer task has been cancelled and run again (several
        event-loop turns, pumps included), while the engine keeps stepping."""
        ids = [rid for rid, c in self._collectors.items() if c.owner == owner]
        self._aborts.extend(ids)  # a queued add is applied, then aborted, in one pass
        if ids and self._wakeup is not None:
            self._wakeup.set()
        return len(ids)

    # -- the loop -------------------------------------------------------------------

    def _apply_pending(self) -> None:
        adds, self._adds = self._adds, []
        for request, accepted in adds:
            # The consumer left before intake: its finally may not have run yet, but
            # cancelling it cancelled `accepted` at once.
            if accepted.done() or request.request_id not in self._collectors:
                continue
            try:
                self.engine.add_request(request)
            except Exception as err:  # the caller sees the engine's own error
                self._collectors.pop(request.request_id, None)
                accepted.set_exception(err)
            else:
                accepted.set_result(None)
        aborts, self._aborts = self._aborts, []
        for request_id in aborts:
            self.engine.abort(request_id)

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a model or engine bug: this engine is done
            self._die(err)

    async def _loop(self) -> None:
        while True:
            self._apply_pending()
            if not self.engine.has_unfinished():
                self._wakeup.clear()
                if not self._adds and not self._aborts:
                    await self._wakeup.wait()
                continue
            hold = self._background_hold()
            if hold > 0:  # only background work, and interactive work ended just now
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), hold)
                continue
            outputs = await asyncio.to_thread(self.engine.step)
            for out in outputs:
                collector = self._collectors.get(out.request_id)
                if collector is not None:
                    collector.put(out)

    def _background_hold(self) -> float:
        """Seconds to keep the engine's (background-only) work parked; 0 to step now."""
        if self.num_foreground or not self.background_delay:
            return 0.0
        return self._foreground_ended + self.background_delay - time.monotonic()

    def _die(self, cause: BaseException) -> None:
        """Fail every waiting and running request, then tell the supervisors."""
        self.dead = cause
        error = EngineFailedError(cause)
        adds, self._adds = self._adds, []
        for _request, accepted in adds:
            if not accepted.done():
                accepted.set_exception(error)
        for rid, collector in list(self._collectors.items()):
            collector.fail(error)
            with contextlib.suppress(Exception):  # free what can be freed; state is suspect
                self.engine.abort(rid)
        for callback in self.on_failure:
            callback(cause)
