"""The SDK's side of BatchService: batch jobs as small dataclasses, JSONL as messages."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mmntp.v1 import batch_pb2 as bpb

CHUNK_BYTES = 1 << 20  # JSONL bytes per CreateBatch message (whole lines; a longer line alone)


@dataclass(frozen=True)
class BatchJob:
    """A batch on the server: `status` is validating, in_progress, cancelling, cancelled,
    completed or failed; counts are requests; times are seconds since the epoch."""

    id: str
    name: str
    status: str
    total: int
    done: int
    failed: int
    cancelled: int
    created_at: float
    finished_at: float
    error: str

    @property
    def ended(self) -> bool:
        return self.status in ("cancelled", "completed", "failed")


@dataclass(frozen=True)
class BatchResult:
    """One result: `line` is its results.jsonl line (JSON), `files` the files it names
    (path relative to the batch folder -> bytes)."""

    custom_id: str
    status: str
    line: str
    files: dict[str, bytes] = field(default_factory=dict)


def batch_job(message: bpb.Batch) -> BatchJob:
    return BatchJob(
        message.id,
        message.name,
        message.status,
        message.total,
        message.done,
        message.failed,
        message.cancelled,
        message.created_at,
        message.finished_at,
        message.error,
    )


def batch_result(message: bpb.BatchResult) -> BatchResult:
    files = {f.path: f.data for f in message.files}
    return BatchResult(message.custom_id, message.status, message.line, files)


def create_messages(
    source: str | Path | Iterable[str | bytes], name: str = ""
) -> Iterator[bpb.CreateBatchRequest]:
    """CreateBatch's request stream: `source` is a JSONL file's path or an iterable of
    lines; the first message carries `name`. Lines are never split across messages."""
    if isinstance(source, str | Path):
        with open(source, "rb") as f:
            yield from _pack(f, name)
    else:
        yield from _pack(source, name)


def _pack(lines: Iterable[str | bytes], name: str) -> Iterator[bpb.CreateBatchRequest]:
    buffer: list[bytes] = []
    size, first = 0, True
    for line in lines:
        data = line.encode() if isinstance(line, str) else line
        if not data.endswith(b"\n"):
            data += b"\n"
        if buffer and size + len(data) > CHUNK_BYTES:
            yield bpb.CreateBatchRequest(name=name if first else "", lines=b"".join(buffer))
            buffer, size, first = [], 0, False
        buffer.append(data)
        size += len(data)
    if buffer or first:
        yield bpb.CreateBatchRequest(name=name if first else "", lines=b"".join(buffer))
