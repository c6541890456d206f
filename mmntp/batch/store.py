"""The batch's durable state: SQLite in WAL mode at `DIR/batch.sqlite`.

One row per custom_id: its input line, its state (pending, done, error), the result line
to write (JSON, exactly what results.jsonl gets) and whether that line is known to be in
results.jsonl (`written`). The meta table holds the input's fingerprint (path and
sha256): a second run into the same folder must bring the same input.

WAL with synchronous=NORMAL survives a killed process (every commit is in the log before
`commit` returns); a power cut can lose the last commits, which only means redoing them:
results.jsonl is reconciled against `written` on every start (results.py), so a lost mark
drops a line that is then written again, never twice.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mmntp.batch.lines import BatchRefused

STORE_FILE = "batch.sqlite"
STATES = ("pending", "done", "error")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    custom_id TEXT PRIMARY KEY,
    line INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'error')),
    result TEXT,
    written INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS items_unwritten ON items (written, state);
"""


@dataclass(frozen=True)
class Fingerprint:
    """Which input a batch folder belongs to."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Counts:
    total: int
    pending: int
    done: int
    error: int
    written: int

    @property
    def finished(self) -> int:
        return self.done + self.error

    @property
    def complete(self) -> bool:
        """Every request has a result and every result is in results.jsonl."""
        return self.pending == 0 and self.written == self.total


class BatchStore:
    """One batch folder's SQLite store (used from one thread)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.directory / STORE_FILE, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=10000")
        self.db.executescript(_SCHEMA)

    @classmethod
    def open(
        cls, directory: str | Path, fingerprint: Fingerprint, ids: Mapping[str, int]
    ) -> BatchStore:
        """The folder's store, created with every id pending, or the existing one when it
        holds the same input (BatchRefused when it holds another)."""
        store = cls(directory)
        known = store.fingerprint()
        if known is None:
            store._create(fingerprint, ids)
        elif known.sha256 != fingerprint.sha256:
            store.close()
            raise BatchRefused(
                f"{directory} holds the batch of another input ({known.path}, sha256 "
                f"{known.sha256[:12]}...; this one is {fingerprint.sha256[:12]}...): "
                "use a new --out folder"
            )
        return store

    def _create(self, fingerprint: Fingerprint, ids: Mapping[str, int]) -> None:
        with self.transaction():
            self.db.executemany("INSERT INTO items (custom_id, line) VALUES (?, ?)", ids.items())
            # Written last: a store with a fingerprint always has its items.
            self.db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("input_path", fingerprint.path), ("input_sha256", fingerprint.sha256)],
            )

    def transaction(self):
        """`with store.transaction():` one atomic commit (sqlite3's context manager)."""
        self.db.execute("BEGIN")
        return _Commit(self.db)

    def close(self) -> None:
        self.db.close()

    # -- meta ------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def fingerprint(self) -> Fingerprint | None:
        path, sha = self.get_meta("input_path"), self.get_meta("input_sha256")
        return None if sha is None else Fingerprint(path or "", sha)

    # -- items -----------------------------------------------------------------------

    def state(self, custom_id: str) -> str | None:
        row = self.db.execute("SELECT state FROM items WHERE custom_id = ?", (custom_id,))
        found = row.fetchone()
        return found[0] if found else None

    def finished_ids(self) -> set[str]:
        rows = self.db.execute("SELECT custom_id FROM items WHERE state != 'pending'")
        return {r[0] for r in rows}

    def record(self, custom_id: str, ok: bool, line: str) -> None:
        """Store a request's result line (state done or error), once: a second result
        for the same id is ignored, so the first one is what results.jsonl gets."""
        self.db.execute(
            "UPDATE items SET state = ?, result = ? WHERE custom_id = ? AND state = 'pending'",
            ("done" if ok else "error", line, custom_id),
        )

    def counts(self) -> Counts:
        row = self.db.execute(
            "SELECT COUNT(*), "
            "COALESCE(SUM(state = 'pending'), 0), COALESCE(SUM(state = 'done'), 0), "
            "COALESCE(SUM(state = 'error'), 0), COALESCE(SUM(written), 0) FROM items"
        ).fetchone()
        return Counts(*row)

    def unwritten(self) -> list[tuple[str, str]]:
        """(custom_id, result line) of every result not yet in results.jsonl, in input order."""
        rows = self.db.execute(
            "SELECT custom_id, result FROM items WHERE written = 0 AND state != 'pending' "
            "ORDER BY line"
        )
        return rows.fetchall()

    def written_ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT custom_id FROM items WHERE written = 1")}

    def mark_written(self, ids: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany(
                "UPDATE items SET written = 1 WHERE custom_id = ?", ((i,) for i in ids)
            )

    def unmark_written(self, ids: Iterable[str]) -> None:
        with self.transaction():
            self.db.executemany(
                "UPDATE items SET written = 0 WHERE custom_id = ?", ((i,) for i in ids)
            )


class _Commit:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, exc_type, *exc) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
