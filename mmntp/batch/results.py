"""`DIR/results.jsonl`, written from the store so that every custom_id is in it once.

A line is `{"custom_id", "status": "ok"|"error", "response": {...}|null,
"error": {"code", "message"[, "field"]}|null}`. The store holds each result line before
it is written; a line is marked `written` only after it is flushed and fsynced. On every
start `repair` reconciles the file with the marks, which makes each crash window safe:

- killed while writing a line: the torn last line (no newline, or not JSON) is dropped,
  and the result, unmarked, is written again;
- killed after writing, before marking: the line's id is not marked, so the line is
  dropped and written again from the store (the file never holds it twice);
- killed after recording, before writing: the result is unmarked and gets appended;
- a marked line missing from the file (the file edited by hand): unmarked, written again.

A repair that drops lines rewrites the file to a temporary one and renames it over the
old one, so the file is always either the old or the repaired one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmntp.batch.store import BatchStore

RESULTS_FILE = "results.jsonl"
# Test hook, active only when set: "torn:K" exits after writing half of the K-th line,
# "written:K" after the K-th line is fsynced but before it is marked, "recorded:K" after
# the K-th result is stored (runner.py) - the three crash windows above, made exact.
CRASH_ENV = "MMNTP_BATCH_TEST_CRASH"
_crash_counts: dict[str, int] = {}


def result_line(custom_id: str, response: dict | None = None, error: dict | None = None) -> str:
    status = "ok" if error is None else "error"
    record = {"custom_id": custom_id, "status": status, "response": response, "error": error}
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["field"] = field
    return body


def crash_point(point: str) -> bool:
    """True when the test hook asks to die at this occurrence of `point`."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return False
    name, _, count = spec.partition(":")
    if name != point:
        return False
    _crash_counts[point] = _crash_counts.get(point, 0) + 1
    return _crash_counts[point] == int(count or 1)


def die() -> None:
    os._exit(86)  # the test hook's exit: no cleanup, as after kill -9


@dataclass(frozen=True)
class Repair:
    kept: int
    dropped: int  # torn, unmarked or repeated lines
    rewritten: int  # marked results missing from the file, to be written again


class ResultsWriter:
    """Appends the store's unwritten results to results.jsonl; `repair()` first."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self.path = store.directory / RESULTS_FILE

    def repair(self) -> Repair:
        marked = self.store.written_ids()
        keep_lines, kept_ids = _scan(self.path, marked)
        dropped = _count_lines(self.path) - len(keep_lines)
        if dropped:
            _rewrite(self.path, keep_lines)
        missing = marked - kept_ids
        if missing:
            self.store.unmark_written(missing)
        return Repair(len(keep_lines), dropped, len(missing))

    def flush(self) -> int:
        """Append every stored, unwritten result; fsync; then mark them. Returns how many."""
        items = self.store.unwritten()
        if not items:
            return 0
        created = not self.path.exists()
        with open(self.path, "ab") as f:
            for _, line in items:
                data = line.encode() + b"\n"
                if crash_point("torn"):
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    die()
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if created:
            _fsync_dir(self.path.parent)
        if crash_point("written"):
            die()
        self.store.mark_written(cid for cid, _ in items)
        return len(items)


def _scan(path: Path, marked: set[str]) -> tuple[set[int], set[str]]:
    """The indexes of the lines to keep (whole, JSON, marked, first of their id) and
    their ids."""
    keep, ids = set(), set()
    if not path.exists():
        return keep, ids
    with open(path, "rb") as f:
        for index, raw in enumerate(f):
            if not raw.endswith(b"\n"):
                break  # torn: only the last line can lack its newline
            try:
                custom_id = json.loads(raw).get("custom_id")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                continue
            if custom_id in marked and custom_id not in ids:
                keep.add(index)
                ids.add(custom_id)
    return keep, ids


def _count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _rewrite(path: Path, keep: set[int]) -> None:
    tmp = path.with_suffix(".jsonl.tmp")
    with open(path, "rb") as src, open(tmp, "wb") as dst:
        for index, raw in enumerate(src):
            if index in keep:
                dst.write(raw)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
