"""The server's batch jobs: kept in a state folder, run as background engine work.

Each batch is a folder `STATE_DIR/batches/<id>/` in the batch core's layout (mmntp.batch):
the input as received (`input.jsonl`), the SQLite store (`batch.sqlite`, WAL) holding
each custom_id's state and result line, `results.jsonl` (every custom_id exactly once,
kept by the core's ResultsWriter through any kill -9) and `files/` (images, audio,
motion). The batch's own status, name and times live in the store's meta table, so a
restarted server finds every batch where it stopped: an in_progress batch resumes with
the custom_ids that have no result yet, a cancelling one finishes its cancel.

A new batch is received into `batches/.incoming-*/`, checked (the core's pre-pass: a line
that is not JSON, a missing or repeated custom_id refuses it, naming the line), stored,
and only then renamed into place, so a crash never leaves half a batch; leftovers of
interrupted uploads are removed on start.

Priority: every batch request goes to the pipeline's AsyncEngine at BACKGROUND_PRIORITY
with owner "batch:<id>". The scheduler runs background rows only in steps without
foreground work (preempting running ones when an interactive request arrives), and the
runner here queues a new request only while no interactive request is in flight, with at
most `server.batch_rows` engine rows of batch work in flight (over all batches), and the
AsyncEngine steps batch rows only `server.batch_idle_seconds` after the last interactive
request ended.

Ownership: a batch made on a server with API keys belongs to the key that made it (its
`key_id`, never the key, kept in the store's meta table so it survives restarts). The
methods take the caller's owner: a batch of another owner is answered exactly like an
unknown id (BatchNotFound), so ids cannot be probed; owner None (a server without keys)
sees every batch. A batch name is an idempotency key per owner.

All SQLite and file work runs in one IO thread (a store connection belongs to the thread
that made it), so the event loop only routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from mmntp.batch.lines import BatchRefused, check_input, read_lines
from mmntp.batch.responses import FILES_DIR
from mmntp.batch.results import RESULTS_FILE, ResultsWriter, error_body, result_line
from mmntp.batch.runner import LocalBackend, Outcome, Recorder, Window, admit, execute
from mmntp.batch.store import BatchStore, Fingerprint
from mmntp.engine import BACKGROUND_PRIORITY
from mmntp.engine.async_engine import EngineFailedError

log = logging.getLogger("mmntp.serve.batches")

INPUT_FILE = "input.jsonl"
BATCHES_DIR = "batches"
INCOMING_PREFIX = ".incoming-"
ENDED = ("cancelled", "completed", "failed")
_ID = re.compile(r"b-[0-9a-f]{16}")
T = TypeVar("T")


class BatchNotFound(LookupError):
    """No batch with this id on this server."""


class TooManyBatches(RuntimeError):
    """server.max_batches batches are kept and none of them has ended."""


@dataclass(frozen=True)
class BatchLimits:
    """How big a batch may be and how many the server keeps (service.json "server")."""

    max_lines: int = 50_000  # request lines per batch
    max_line_bytes: int = 1 << 20  # bytes per line
    max_batches: int = 100  # batches kept; the oldest ended ones go first
    rows: int = 16  # engine rows of batch work in flight, over all batches


@dataclass
class BatchInfo:
    """What GetBatch answers: a batch's status and counts."""

    id: str
    name: str
    status: str
    total: int
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    created_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""
    owner: str = ""  # the key_id of the key that made it; "" on a server without keys


@dataclass
class _Batch:
    info: BatchInfo
    directory: Path
    task: asyncio.Task | None = None
    inflight: set[asyncio.Task] = field(default_factory=set)
    cancel_requested: bool = False
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)


class BatchManager:
    """The batches of one server: create, inspect, cancel, stream results, run them."""

    def __init__(self, pipe: Any, state_dir: str | Path, limits: BatchLimits) -> None:
        self.pipe = pipe
        self.root = Path(state_dir) / BATCHES_DIR
        self.limits = limits
        self._io_pool = ThreadPoolExecutor(1, thread_name_prefix="mmntp-batch-io")
        self._stores: dict[str, BatchStore] = {}  # touched only in the IO thread
        self._batches: dict[str, _Batch] = {}
        self._rows = Window(limits.rows)  # engine rows of batch work, over all batches
        self._releases: set[asyncio.Task] = set()
        self._create_lock = asyncio.Lock()

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io_pool, fn, *args)

    # -- start and stop -------------------------------------------------------------

    async def start(self) -> None:
        """Load the kept batches; resume every one that had not ended."""
        for info, directory in await self._io(self._load_all):
            self._batches[info.id] = _Batch(info, directory)
        for batch in self._batches.values():
            if batch.info.status not in ENDED:
                if batch.info.status == "cancelling":
                    batch.cancel_requested = True
                    batch.cancel_event.set()
                log.info("resuming batch %s (%s)", batch.info.id, batch.info.status)
                self._launch(batch)

    def _load_all(self) -> list[tuple[BatchInfo, Path]]:
        if not self.root.is_dir():
            return []
        found = []
        for directory in sorted(self.root.iterdir()):
            if directory.name.startswith(INCOMING_PREFIX):
                shutil.rmtree(directory, ignore_errors=True)  # an interrupted upload
            elif _ID.fullmatch(directory.name) and (directory / "batch.sqlite").is_file():
                store = self._store(directory.name, directory)
                found.append((_read_info(directory.name, store), directory))
        return found

    async def stop(self) -> None:
        """Stop running batches where they are (not a cancel: they resume on restart)."""
        tasks = [b.task for b in self._batches.values() if b.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._io(self._close_stores)
        self._io_pool.shutdown(wait=True)

    def _close_stores(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def _store(self, batch_id: str, directory: Path) -> BatchStore:
        if batch_id not in self._stores:
            self._stores[batch_id] = BatchStore(directory)
        return self._stores[batch_id]

    # -- create -----------------------------------------------------------------------

    async def create(
        self, name: str, chunks: AsyncIterator[bytes], owner: str | None = None
    ) -> BatchInfo:
        """Receive a batch's JSONL bytes, check and store them, start it, as `owner`'s
        (None: nobody's). BatchRefused (naming the line) refuses it; TooManyBatches when
        none can be evicted."""
        owner = owner or ""
        batch_id = _id_for(name, owner)
        async with self._create_lock:
            existing = self._batches.get(batch_id)
        if existing is not None:  # the same name again: the batch it made
            async for _ in chunks:
                pass
            return existing.info
        incoming = self.root / f"{INCOMING_PREFIX}{uuid.uuid4().hex}"
        try:
            await self._receive(incoming, chunks)
            check = await self._io(check_input, incoming / INPUT_FILE)
            async with self._create_lock:
                if batch_id in self._batches:
                    return self._batches[batch_id].info
                await self._make_room()
                info = BatchInfo(
                    batch_id,
                    name,
                    "in_progress",
                    len(check.ids),
                    created_at=time.time(),
                    owner=owner,
                )
                await self._io(
                    _store_new, incoming, info, Fingerprint(INPUT_FILE, check.sha256), check.ids
                )
                directory = self.root / batch_id
                await self._io(incoming.rename, directory)
                batch = self._batches[batch_id] = _Batch(info, directory)
        finally:
            await self._io(shutil.rmtree, incoming, True)
        log.info("batch %s created: %d requests", batch_id, info.total)
        self._launch(batch)
        return info

    async def _receive(self, incoming: Path, chunks: AsyncIterator[bytes]) -> None:
        """Write the streamed bytes to incoming/input.jsonl, enforcing the limits."""
        await self._io(lambda: incoming.mkdir(parents=True))
        limits = self.limits
        with open(incoming / INPUT_FILE, "wb") as out:  # appends below go through the IO thread
            lines, partial = 0, b""
            async for data in chunks:
                pieces = (partial + data).split(b"\n")
                partial = pieces.pop()
                for piece in pieces:
                    lines += 1
                    _check_line(lines, len(piece), limits)
                _check_line(lines + 1, len(partial), limits)
                await self._io(out.write, data)
            if partial:
                lines += 1
        if lines == 0:
            raise BatchRefused("the input has no request lines")

    async def _make_room(self) -> None:
        if len(self._batches) < self.limits.max_batches:
            return
        ended = sorted(
            (b for b in self._batches.values() if b.info.status in ENDED),
            key=lambda b: b.info.created_at,
        )
        if not ended:
            raise TooManyBatches(
                f"the server keeps max_batches={self.limits.max_batches} batches and none "
                "has ended; cancel one or retry later"
            )
        oldest = ended[0]
        del self._batches[oldest.info.id]
        await self._io(self._evict, oldest.info.id, oldest.directory)
        log.info("batch %s evicted (max_batches %d)", oldest.info.id, self.limits.max_batches)

    def _evict(self, batch_id: str, directory: Path) -> None:
        store = self._stores.pop(batch_id, None)
        if store is not None:
            store.close()
        shutil.rmtree(directory, ignore_errors=True)

    # -- inspect and cancel -------------------------------------------------------------

    def _find(self, batch_id: str, owner: str | None) -> _Batch:
        """The batch, if `owner` may see it (None sees all); another owner's batch is
        not found, in the same words as an unknown id."""
        batch = self._batches.get(batch_id)
        if batch is None or not _visible(batch.info, owner):
            raise BatchNotFound(f"no batch {batch_id!r} on this server")
        return batch

    def get(self, batch_id: str, owner: str | None = None) -> BatchInfo:
        return self._find(batch_id, owner).info

    def list(self, owner: str | None = None) -> list[BatchInfo]:
        """Every kept batch `owner` may see, newest first."""
        infos = (b.info for b in self._batches.values() if _visible(b.info, owner))
        return sorted(infos, key=lambda i: -i.created_at)

    async def cancel(self, batch_id: str, owner: str | None = None) -> BatchInfo:
        """Abort the batch's engine requests (within one step) and give every custom_id
        without a result the status "cancelled"; an ended batch is left as it is."""
        batch = self._find(batch_id, owner)
        if batch.info.status in ENDED or batch.cancel_requested:
            if batch.task is not None:
                await asyncio.shield(batch.task)
            return batch.info
        # Nothing awaited before the aborts: the engine steps on meanwhile (a status
        # write took 2-3 steps), and the batch's rows must not compute past the step
        # running now. The row tasks are cancelled so that they record no result.
        batch.cancel_requested = True
        batch.cancel_event.set()
        for task in list(batch.inflight):
            task.cancel()
        self.pipe.async_engine.abort_owner(_owner(batch_id))
        await self._set_status(batch, "cancelling")
        if batch.task is not None:
            await asyncio.shield(batch.task)
        return batch.info

    async def _set_status(self, batch: _Batch, status: str, error: str = "") -> None:
        info = batch.info
        info.status, info.error = status, error
        if status in ENDED:
            info.finished_at = time.time()
        store = self._stores[info.id]
        await self._io(_save_status, store, info)

    # -- results ------------------------------------------------------------------------

    async def results(
        self, batch_id: str, owner: str | None = None
    ) -> AsyncIterator[tuple[dict, str, list[tuple[str, bytes]]]]:
        """(result, its line, [(file path, bytes)]) for each line in results.jsonl now."""
        batch = self._find(batch_id, owner)
        offset = 0
        while True:
            block, offset = await self._io(_read_results, batch.directory, offset)
            if not block:
                return
            for item in block:
                yield item

    # -- running ------------------------------------------------------------------------

    def _launch(self, batch: _Batch) -> None:
        batch.task = asyncio.get_running_loop().create_task(
            self._run(batch), name=f"mmntp-batch-{batch.info.id}"
        )

    async def _run(self, batch: _Batch) -> None:
        store = await self._io(self._store, batch.info.id, batch.directory)
        writer = ResultsWriter(store)
        try:
            await self._io(_repair, writer)
            await self._refresh_counts(batch, store)
            info = batch.info
            left = info.total - info.done - info.failed - info.cancelled
            log.info("batch %s: %d of %d requests to run", info.id, left, info.total)
            if not batch.cancel_requested:
                recorder = await self._io(Recorder, store, writer, False)
                await self._feed(batch, store, recorder)
            if batch.cancel_requested:
                await self._io(_cancel_pending, store, writer)
                await self._refresh_counts(batch, store)
                await self._set_status(batch, "cancelled")
            else:
                await self._set_status(batch, "completed")
            log.info("batch %s %s", batch.info.id, batch.info.status)
        except asyncio.CancelledError:
            for task in batch.inflight:
                task.cancel()
            raise  # the server stops: the batch resumes on restart
        except EngineFailedError:
            return  # the server exits; the batch resumes when it is restarted
        except Exception as err:  # a full disk, a corrupt store: this batch cannot go on
            log.exception("batch %s failed", batch.info.id)
            for task in batch.inflight:
                task.cancel()
            await self._set_status(batch, "failed", f"{type(err).__name__}: {err}")

    async def _feed(self, batch: _Batch, store: BatchStore, recorder: Recorder) -> None:
        """Queue each pending line as a background request while the row budget allows."""
        finished = await self._io(store.finished_ids)
        engine = self.pipe.async_engine
        backend = _BackgroundBackend(self.pipe, _owner(batch.info.id))
        failure: list[BaseException] = []
        for line in read_lines(batch.directory / INPUT_FILE):
            if line.custom_id in finished:
                continue
            # Validation decodes images and audio: off the event loop.
            got = await asyncio.to_thread(admit, backend, line.custom_id, line.request)
            if isinstance(got, Outcome):  # an invalid request: its error line, no engine
                await self._record(batch, recorder, got)
                continue
            (valid, modality), rows = got
            if failure or not await self._take_rows(batch, engine, rows):
                break
            run = self._run_row(batch, recorder, backend, line.custom_id, valid, modality)
            task = asyncio.get_running_loop().create_task(run)
            batch.inflight.add(task)
            task.add_done_callback(partial(self._row_done, batch, rows, failure))
        while batch.inflight:
            await asyncio.wait(set(batch.inflight))
        if failure:
            raise failure[0]

    async def _take_rows(self, batch: _Batch, engine, rows: int) -> bool:
        """Wait until `rows` fit the budget while no interactive request is in flight;
        False (holding nothing) if the batch is cancelled meanwhile."""

        async def when_idle() -> None:
            while True:  # interactive work first: take rows only when none is in flight
                await engine.wait_foreground_idle()
                await self._rows.acquire(rows)
                if not engine.num_foreground:
                    return
                await self._rows.release(rows)

        waiter = asyncio.ensure_future(when_idle())
        cancelled = asyncio.ensure_future(batch.cancel_event.wait())
        try:
            await asyncio.wait({waiter, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
            if not batch.cancel_requested:
                return True
            await self._rows.release(rows)
        return False

    def _row_done(self, batch: _Batch, rows: int, failure: list, task: asyncio.Task) -> None:
        batch.inflight.discard(task)
        release = asyncio.get_running_loop().create_task(self._rows.release(rows))
        self._releases.add(release)  # held until done: the loop keeps only weak references
        release.add_done_callback(self._releases.discard)
        if not task.cancelled() and task.exception() is not None:
            failure.append(task.exception())

    async def _run_row(self, batch, recorder, backend, custom_id, valid, modality) -> None:
        await self._record(batch, recorder, await execute(backend, custom_id, valid, modality))

    async def _record(self, batch: _Batch, recorder: Recorder, outcome: Outcome) -> None:
        await self._io(recorder, outcome)  # file, store, results.jsonl (first result wins)
        if outcome.ok:
            batch.info.done += 1
        else:
            batch.info.failed += 1

    async def _refresh_counts(self, batch: _Batch, store: BatchStore) -> None:
        counts, cancelled = await self._io(lambda: (store.counts(), store.get_meta("cancelled")))
        batch.info.cancelled = int(cancelled or 0)
        batch.info.done = counts.done
        batch.info.failed = counts.error - batch.info.cancelled


# -- IO-thread helpers -------------------------------------------------------------------


def _id_for(name: str, owner: str) -> str:
    """A named batch's id follows from its owner and name (the idempotency key: two keys
    using one name get two batches); else random. Unowned: the name alone, as before."""
    if name:
        key = f"mmntp-batch-name:{owner}:{name}" if owner else f"mmntp-batch-name:{name}"
        return "b-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return "b-" + uuid.uuid4().hex[:16]


def _visible(info: BatchInfo, owner: str | None) -> bool:
    """A keyed caller sees its own batches only (not those made while the server had no
    keys either: they have no owner to match)."""
    return owner is None or info.owner == owner


def _owner(batch_id: str) -> str:
    """The engine owner of a batch's requests."""
    return f"batch:{batch_id}"


def _check_line(number: int, size: int, limits: BatchLimits) -> None:
    if number > limits.max_lines and size:
        raise BatchRefused(f"line {number}: the batch has more than max_lines={limits.max_lines}")
    if size > limits.max_line_bytes:
        raise BatchRefused(
            f"line {number}: longer than max_line_bytes={limits.max_line_bytes} bytes"
        )


def _store_new(directory: Path, info: BatchInfo, fingerprint: Fingerprint, ids) -> None:
    store = BatchStore.open(directory, fingerprint, ids)
    try:
        with store.transaction():
            store.set_meta("name", info.name)
            store.set_meta("owner", info.owner)
            store.set_meta("created_at", repr(info.created_at))
            store.set_meta("status", info.status)
    finally:
        store.close()


def _save_status(store: BatchStore, info: BatchInfo) -> None:
    with store.transaction():
        store.set_meta("status", info.status)
        store.set_meta("finished_at", repr(info.finished_at))
        store.set_meta("error", info.error)


def _read_info(batch_id: str, store: BatchStore) -> BatchInfo:
    counts = store.counts()
    cancelled = int(store.get_meta("cancelled") or 0)
    return BatchInfo(
        batch_id,
        store.get_meta("name") or "",
        store.get_meta("status") or "in_progress",
        counts.total,
        counts.done,
        counts.error - cancelled,
        cancelled,
        float(store.get_meta("created_at") or 0.0),
        float(store.get_meta("finished_at") or 0.0),
        store.get_meta("error") or "",
        store.get_meta("owner") or "",
    )


def _repair(writer: ResultsWriter) -> None:
    writer.repair()
    writer.flush()  # results stored before a crash but not yet in results.jsonl


def _record(store: BatchStore, writer: ResultsWriter, custom_id: str, ok: bool, line: str) -> None:
    store.record(custom_id, ok, line)
    writer.flush()


def cancelled_line(custom_id: str) -> str:
    """The result line of a request its batch's cancel stopped."""
    error = error_body("cancelled", "the batch was cancelled before this request finished")
    record = json.loads(result_line(custom_id, error=error))
    record["status"] = "cancelled"
    return json.dumps(record, ensure_ascii=False)


def _cancel_pending(store: BatchStore, writer: ResultsWriter) -> None:
    pending = [
        cid for (cid,) in store.db.execute("SELECT custom_id FROM items WHERE state = 'pending'")
    ]
    with store.transaction():
        for cid in pending:
            store.record(cid, False, cancelled_line(cid))
        known = int(store.get_meta("cancelled") or 0)
        store.set_meta("cancelled", str(known + len(pending)))
    writer.flush()


_RESULTS_BLOCK = 256  # result lines read per trip to the IO thread


def _read_results(directory: Path, offset: int):
    """Up to _RESULTS_BLOCK whole lines of results.jsonl from byte `offset`, each with
    its files; (items, the next offset)."""
    path = directory / RESULTS_FILE
    if not path.exists():
        return [], offset
    items = []
    with open(path, "rb") as f:
        f.seek(offset)
        for raw in f:
            if not raw.endswith(b"\n") or len(items) >= _RESULTS_BLOCK:
                break
            offset += len(raw)
            text = raw.decode().rstrip("\n")
            record = json.loads(text)
            items.append((record, text, _files_of(directory, record)))
    return items, offset


def _files_of(directory: Path, record: dict) -> list[tuple[str, bytes]]:
    name = (record.get("response") or {}).get("file")
    if not isinstance(name, str) or not name.startswith(f"{FILES_DIR}/") or ".." in name:
        return []
    path = directory / name
    return [(name, path.read_bytes())] if path.is_file() else []


class _BackgroundPipe:
    """The pipeline, except that its requests are background work of one owner."""

    def __init__(self, pipe: Any, owner: str) -> None:
        self._pipe, self._owner = pipe, owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def astream(self, *args: Any, **kwargs: Any):
        kwargs.update(priority=BACKGROUND_PRIORITY, owner=self._owner)
        return self._pipe.astream(*args, **kwargs)


class _BackgroundBackend(LocalBackend):
    """The local runner's backend (validation, QueueFullError waited out, error lines)
    over the background pipeline. Never closed: the engine is the server's."""

    def __init__(self, pipe: Any, owner: str) -> None:
        super().__init__(_BackgroundPipe(pipe, owner))
