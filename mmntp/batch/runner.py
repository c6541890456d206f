"""`mmntp batch run`: a batch file through a local pipeline or a server, durably.

`run_batch` is the whole command: the pre-pass (refuses a bad input before any work),
the store (created, or reopened to resume), the results file repaired, then every
pending request run and recorded. A finished batch reruns as a no-op.

Requests run concurrently, not one by one: locally on the pipeline's AsyncEngine
(continuous batching), with `--server` through the SDK's AsyncClient. A window bounds
what is in flight: locally, engine rows (a forecast runs one row per sample path, a
guided image or audio two) up to twice the engine's `max_num_seqs`, so the engine's
batch is full and as much again waits prepared, far inside its waiting queue's bounds
(a QueueFullError is still waited out and retried); with a server, `--concurrency` requests
(default 16). The input is streamed; only the window's requests are in memory.

Every result is recorded when it finishes: a media file first (atomically), then the
store, then results.jsonl (results.py). A bad request (unknown field or modality, a
value the validation step refuses) becomes an error line; a failure that is not the
request's (the engine died, the server went away) stops the run, and the same command
resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mmntp.api import FieldError
from mmntp.batch.lines import check_input, parse_request, read_lines
from mmntp.batch.responses import ResponseCollector, save_media
from mmntp.batch.results import ResultsWriter, crash_point, die, error_body, result_line
from mmntp.batch.store import BatchStore, Counts, Fingerprint

DEFAULT_REMOTE_CONCURRENCY = 16
# gRPC codes that are the request's fault: an error line, not a stopped run.
REQUEST_CODES = frozenset({"INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION"})
RETRY_SECONDS = 0.05  # first wait after an overload answer; doubles up to 2 s


class RequestFailed(Exception):
    """One request cannot succeed: it becomes an error line and the batch goes on."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


class Backend(Protocol):
    """Where requests run: `admit` checks one (FieldError), `stream` runs it."""

    window_rows: int
    max_requests: int | None

    def admit(self, request: Any) -> tuple[tuple[Any, str], int]:
        """((what `stream` takes, the output modality), the engine rows it occupies)."""

    def stream(self, admitted: Any) -> AsyncIterator[Any]: ...


@dataclass(frozen=True)
class Outcome:
    custom_id: str
    ok: bool
    line: str  # the result line
    data: bytes | None = None  # a media result's file ...
    file: str | None = None  # ... and where it goes, relative to the batch folder


@dataclass(frozen=True)
class RunReport:
    counts: Counts
    already_complete: bool
    results: Path


# -- one request -----------------------------------------------------------------------


def failed(custom_id: str, code: str, message: str, field: str | None = None) -> Outcome:
    return Outcome(custom_id, False, result_line(custom_id, error=error_body(code, message, field)))


def admit(backend: Backend, custom_id: str, request: Any) -> tuple[Any, int] | Outcome:
    """A line's request admitted by the backend, or its error line."""
    try:
        req = parse_request(request, custom_id)
        return backend.admit(req)
    except FieldError as err:
        return failed(custom_id, "INVALID_ARGUMENT", str(err), err.field)
    except (ValueError, TypeError) as err:  # a value no field check caught: still the line's
        return failed(custom_id, "INVALID_ARGUMENT", f"request: {err}")


async def execute(backend: Backend, custom_id: str, admitted: Any, modality: str) -> Outcome:
    collector = ResponseCollector(modality)
    try:
        async for chunk in backend.stream(admitted):
            collector.add(chunk)
    except RequestFailed as err:
        return failed(custom_id, err.code, err.message, err.field)
    try:
        body, data = collector.result(custom_id)
        line = result_line(custom_id, body)  # refuses NaN: JSON has no such number
    except ValueError as err:  # e.g. a stream that ended without its image
        return failed(custom_id, "INTERNAL", f"unusable result: {err}")
    return Outcome(custom_id, True, line, data, body.get("file"))


class Window:
    """Admission: engine rows (and requests) in flight stay under the backend's bounds;
    one request is always let in, however many rows it has."""

    def __init__(self, rows: int, requests: int | None = None) -> None:
        self.rows, self.requests = rows, requests
        self.used = self.count = 0
        self.changed = asyncio.Condition()

    def _fits(self, rows: int) -> bool:
        if self.count == 0:
            return True
        under = self.requests is None or self.count < self.requests
        return under and self.used + rows <= self.rows

    async def acquire(self, rows: int) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self._fits(rows))
            self.used, self.count = self.used + rows, self.count + 1

    async def release(self, rows: int) -> None:
        async with self.changed:
            self.used, self.count = self.used - rows, self.count - 1
            self.changed.notify_all()


async def run_items(
    backend: Backend,
    items: Iterable[tuple[str, Any]],
    on_outcome: Callable[[Outcome], None],
) -> None:
    """Run (custom_id, request) items concurrently within the backend's window, calling
    `on_outcome` as each finishes. A failure that is not a request's cancels the rest
    and is raised."""
    window = Window(backend.window_rows, backend.max_requests)
    tasks: set[asyncio.Task] = set()
    failure: list[BaseException] = []

    async def one(custom_id: str, admitted: Any, rows: int, modality: str) -> None:
        try:
            on_outcome(await execute(backend, custom_id, admitted, modality))
        except Exception as err:  # kept for the caller: the task itself ends quietly
            failure.append(err)
        finally:
            await window.release(rows)

    try:
        for custom_id, request in items:
            got = admit(backend, custom_id, request)
            if isinstance(got, Outcome):
                on_outcome(got)
                continue
            (admitted, modality), rows = got
            await window.acquire(rows)
            if failure:
                break
            task = asyncio.create_task(one(custom_id, admitted, rows, modality))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks and not failure:
            await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if failure:
        raise failure[0]


# -- the backends ----------------------------------------------------------------------


class LocalBackend:
    """Requests on a Pipeline's AsyncEngine; validation happens at admission.

    `priority` and `owner` go to every engine request (`Pipeline.astream`): a server
    running batches beside interactive work can rank them below it."""

    def __init__(self, pipe: Any, *, priority: int = 0, owner: str = "") -> None:
        self.pipe, self.priority, self.owner = pipe, priority, owner
        # A full engine batch running and one more waiting, prepared: a finished request's
        # rows are replaced at the next step without waiting for the runner.
        self.window_rows = 2 * pipe.engine_config.max_num_seqs
        self.max_requests: int | None = None

    def admit(self, req: Any) -> tuple[tuple[Any, str], int]:
        valid = self.pipe.validate(req.prompt, req.output, req.sampling)
        rows = getattr(valid.output, "num_samples", None) or 1
        if valid.sampling.guidance_scale not in (None, 1.0):
            rows *= 2  # the unconditional shadow row
        return (valid, valid.modality), rows

    async def stream(self, valid: Any) -> AsyncIterator[Any]:
        from mmntp.engine import QueueFullError
        from mmntp.engine.async_engine import EngineFailedError

        delay = RETRY_SECONDS
        while True:
            received = False
            try:
                async for chunk in self.pipe.astream(
                    valid, priority=self.priority, owner=self.owner
                ):
                    received = True
                    yield chunk
                return
            except QueueFullError:
                if received:
                    raise
                await asyncio.sleep(delay)  # the window keeps this rare: wait for room
                delay = min(delay * 2, 2.0)
            except (EngineFailedError, asyncio.CancelledError):
                raise
            except FieldError as err:
                raise RequestFailed("INVALID_ARGUMENT", str(err), err.field) from None
            except ValueError as err:
                raise RequestFailed("INVALID_ARGUMENT", str(err)) from None
            except Exception as err:  # this request's own failure; the engine lives on
                raise RequestFailed("INTERNAL", f"{type(err).__name__}: {err}") from None

    async def close(self) -> None:
        await self.pipe.async_engine.stop()


class RemoteBackend:
    """Requests sent to a server through the SDK's AsyncClient; the server validates."""

    def __init__(self, client: Any, concurrency: int | None = None) -> None:
        self.client = client
        self.window_rows = concurrency or DEFAULT_REMOTE_CONCURRENCY
        self.max_requests = self.window_rows

    def admit(self, req: Any) -> tuple[tuple[Any, str], int]:
        return (req, req.modality), 1

    async def stream(self, req: Any) -> AsyncIterator[Any]:
        from mmntp.client import ClientError

        delay = RETRY_SECONDS
        while True:
            received = False
            try:
                async for chunk in self.client.generate(req.prompt, req.output, req.sampling):
                    received = True
                    yield chunk
                return
            except (ValueError, TypeError) as err:  # building the message: nothing was sent
                raise RequestFailed("INVALID_ARGUMENT", f"request: {err}") from None
            except ClientError as err:
                code = err.code.name
                if code == "RESOURCE_EXHAUSTED" and not received:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if code in REQUEST_CODES:
                    raise RequestFailed(code, err.details) from None
                raise

    async def close(self) -> None:
        await self.client.close()


# -- the command -----------------------------------------------------------------------


class Recorder:
    """The driver's side of each outcome: file, store, results.jsonl, progress."""

    def __init__(self, store: BatchStore, writer: ResultsWriter, progress: bool) -> None:
        self.store, self.writer = store, writer
        counts = store.counts()
        self.done, self.failed = counts.done, counts.error
        self.bar = _progress_bar(counts) if progress else None

    def __call__(self, outcome: Outcome) -> None:
        if self.store.state(outcome.custom_id) != "pending":
            return  # delivered twice (a retried Ray task): the first result stands
        save_media(self.store.directory, outcome.file, outcome.data)
        self.store.record(outcome.custom_id, outcome.ok, outcome.line)
        if crash_point("recorded"):
            die()
        self.writer.flush()
        self.done += outcome.ok
        self.failed += not outcome.ok
        if self.bar is not None:
            self.bar.set_postfix(done=self.done, failed=self.failed, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _progress_bar(counts: Counts):
    from tqdm import tqdm

    bar = tqdm(
        total=counts.total,
        initial=counts.finished,
        unit="req",
        desc="batch",
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    bar.set_postfix(done=counts.done, failed=counts.error, refresh=False)
    return bar


def open_batch(input_path: str | Path, out_dir: str | Path) -> tuple[BatchStore, ResultsWriter]:
    """Pre-pass, store (created or resumed) and the results file repaired and caught up."""
    check = check_input(input_path)
    fingerprint = Fingerprint(str(Path(input_path).resolve()), check.sha256)
    store = BatchStore.open(out_dir, fingerprint, check.ids)
    writer = ResultsWriter(store)
    writer.repair()
    writer.flush()  # results stored before a crash but not yet written
    return store, writer


def pending_items(input_path: str | Path, store: BatchStore) -> Iterable[tuple[str, Any]]:
    """(custom_id, request) of each line still pending, streamed from the input."""
    for line in read_lines(input_path):
        if store.state(line.custom_id) == "pending":
            yield line.custom_id, line.request


def run_batch(
    input_path: str | Path,
    out_dir: str | Path,
    make_backend: Callable[[], Backend],
    progress: bool = True,
) -> RunReport:
    """The whole `mmntp batch run` for the local and --server backends."""
    store, writer = open_batch(input_path, out_dir)
    try:
        if store.counts().complete:
            return RunReport(store.counts(), True, writer.path)
        recorder = Recorder(store, writer, progress)
        try:
            asyncio.run(_run(make_backend, pending_items(input_path, store), recorder))
        finally:
            recorder.close()
        writer.flush()
        return RunReport(store.counts(), False, writer.path)
    finally:
        store.close()


async def _run(make_backend, items, recorder: Recorder) -> None:
    backend = make_backend()
    try:
        await run_items(backend, items, recorder)
    finally:
        with contextlib.suppress(Exception):
            await backend.close()
