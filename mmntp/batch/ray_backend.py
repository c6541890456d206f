"""`mmntp batch run --backend ray`: the batch on Ray Data, recorded by the driver.

The input is read with `ray.data.read_json` (custom_id read as a string, so "007"
stays "007"), already-finished ids are filtered out before dispatch, and `map_batches`
runs an actor pool (`concurrency=workers`), each actor holding one Pipeline built once
and running its batch of requests concurrently on that pipeline's engine, exactly as the
local runner does (`runner.run_items`). Results (response line, media bytes) stream back
to the driver (`iter_rows`), which records them in the same store and results.jsonl:
resume and exactly-once hold as they do locally, and a result Ray delivers twice (a
retried task) is recorded once.

Arrow reads JSON into typed columns: a key whose values change kind between lines (a
number here, a string there) cannot be one column. Such an input is read with
`ray.data.read_text` instead and each line parsed in the actor, so every input the local
runner accepts runs here too (the choice is one streamed pass, `arrow_regular`).

Ray is an optional extra (`pip install mmntp[ray]`). Without `address` the driver joins
the cluster named by $RAY_ADDRESS, else starts a local Ray runtime; the actors need
mmntp importable (installed on the cluster's nodes, or shipped with a runtime_env).
"""

from __future__ import annotations

import asyncio
import json
import warnings
from functools import partial
from pathlib import Path
from typing import Any

from mmntp.batch.lines import numbered, parse_line
from mmntp.batch.runner import LocalBackend, Outcome, Recorder, RunReport, open_batch, run_items

DEFAULT_BATCH_SIZE = 32  # requests per actor call: one engine batch's worth
# Reading the input reserves no CPU: with one actor per CPU (a 2-CPU runtime, 2 workers)
# a read task asking for a CPU waited forever behind the actors that wait for its rows.
READ_CPUS = 0


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is the part this needs
    except ImportError:
        raise ImportError(
            "--backend ray needs Ray Data: pip install 'mmntp[ray]' (ray[data])"
        ) from None
    return ray


class BatchActor:
    """One pipeline per actor; `__call__` runs a batch of rows and returns outcomes."""

    def __init__(self, model: str | None, raw: bool, torch_threads: int | None = None) -> None:
        import torch

        from mmntp.generation import Pipeline

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.backend = LocalBackend(Pipeline.from_pretrained(model))
        self.raw = raw  # rows are raw lines (read_text), else custom_id + request
        # One loop for the actor's life: the pipeline's AsyncEngine is bound to it.
        self.loop = asyncio.new_event_loop()

    def __call__(self, batch: Any) -> dict[str, list]:
        outcomes: list[Outcome] = []
        items = [_item(row, self.raw) for row in batch.to_pylist()]
        self.loop.run_until_complete(run_items(self.backend, items, outcomes.append))
        return {
            "custom_id": [o.custom_id for o in outcomes],
            "ok": [o.ok for o in outcomes],
            "line": [o.line for o in outcomes],
            "file": [o.file for o in outcomes],
            "data": [o.data for o in outcomes],
        }


def _item(row: dict[str, Any], raw: bool) -> tuple[str, Any]:
    """(custom_id, request) of a row of read_json, or of read_text (a raw line)."""
    if raw:
        line = parse_line(0, row["text"])  # the driver's pre-pass has checked every line
        return line.custom_id, line.request
    return row["custom_id"], row["request"]


def _unfinished(finished: set[str], raw: bool, row: dict[str, Any]) -> bool:
    """Whether a row still needs running (the store has no result for its id)."""
    if raw:
        return bool(row["text"].strip()) and parse_line(0, row["text"]).custom_id not in finished
    return row["custom_id"] not in finished


def read_input(ray, path: str, finished: set[str]):
    """(the input as a Ray dataset of unfinished rows, whether its rows are raw lines):
    read_json, or read_text when Arrow cannot type it (see top)."""
    with warnings.catch_warnings():  # Ray suggests expressions; a set lookup is not one
        warnings.simplefilter("ignore", UserWarning)
        if arrow_regular(path):
            import pyarrow as pa
            import pyarrow.json as pajson

            ids = pa.schema([pa.field("custom_id", pa.string())])
            parse = pajson.ParseOptions(explicit_schema=ids)
            ds, raw = ray.data.read_json(path, parse_options=parse, num_cpus=READ_CPUS), False
        else:
            ds, raw = ray.data.read_text(path, num_cpus=READ_CPUS), True
        return ds.filter(partial(_unfinished, finished, raw), num_cpus=READ_CPUS), raw


def run_batch_ray(
    input_path: str | Path,
    out_dir: str | Path,
    model: str | None = None,
    *,
    workers: int = 2,
    address: str | None = None,
    progress: bool = True,
    torch_threads: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> RunReport:
    """The whole `mmntp batch run --backend ray`."""
    ray = import_ray()
    store, writer = open_batch(input_path, out_dir)
    try:
        if store.counts().complete:
            return RunReport(store.counts(), True, writer.path)
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours is on stderr
        try:
            ds, raw = read_input(ray, str(Path(input_path).resolve()), store.finished_ids())
            results = ds.map_batches(
                BatchActor,
                fn_constructor_kwargs={
                    "model": str(Path(model).resolve()) if model else None,
                    "raw": raw,
                    "torch_threads": torch_threads,
                },
                compute=ray.data.ActorPoolStrategy(size=workers),
                batch_size=batch_size,
                batch_format="pyarrow",
            )
            _record(results, Recorder(store, writer, progress))
        finally:
            if started:
                ray.shutdown()
        writer.flush()
        return RunReport(store.counts(), False, writer.path)
    finally:
        store.close()


def _record(results, recorder: Recorder) -> None:
    try:
        for row in results.iter_rows():
            recorder(Outcome(row["custom_id"], row["ok"], row["line"], row["data"], row["file"]))
    finally:
        recorder.close()


# -- can Arrow read it? -------------------------------------------------------------------


def arrow_regular(path: str | Path) -> bool:
    """True when every line's request is an object whose keys keep one JSON kind across
    lines (null fits any), as Arrow's typed columns need. Ints and floats are kinds
    apart: a column holding both would turn 12 into 12.0, which an integer field refuses."""
    kinds: dict[str, str] = {}
    with open(path, "rb") as f:
        for _, data in numbered(f):
            request = json.loads(data).get("request")
            if not isinstance(request, dict):
                return False
            for key, value in request.items():
                kind = _kind(value)
                if kind is None:
                    return False
                if kind != "null" and kinds.setdefault(key, kind) != kind:
                    return False
    return True


def _kind(value: Any) -> str | None:
    """A value's kind as an Arrow column sees it; None for what one column cannot hold
    (nested objects or lists, a list mixing kinds other than ints and floats)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | str):
        return type(value).__name__
    if isinstance(value, list):
        inner = {_kind(v) for v in value} - {"null"}
        if inner == {"int", "float"}:
            inner = {"float"}  # within one list Arrow widens, and series values are floats
        if len(inner) > 1 or not inner <= {"int", "float", "str", "bool"}:
            return None
        return f"list[{inner.pop() if inner else 'empty'}]"
    return None
