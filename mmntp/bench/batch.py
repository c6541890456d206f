"""`mmntp bench batch`: batch throughput against the same requests sent one at a time.

In one run, per modality (forecasts of the bundled example series, images of the
bundled captions), the same request lines go:

- one at a time through the SDK (`Client.generate`) to a server started in this process
  (the baseline: what a user looping over requests gets);
- through `mmntp batch run` locally (`run_batch` on a LocalBackend: continuous batching
  on the pipeline's engine);
- through `mmntp batch run --server` to a server (the AsyncClient, concurrently).

Each path runs on its own freshly loaded model (none finds the others' prompts in its
prefix cache) after one warm-up request. Each row is requests per second, `ratio` =
batch / one at a time. Then (unless --no-interactive) the `interactive ttft` rows of
batch_interactive.py: small interactive requests' time to first chunk on a server with a
BatchService batch running against the same server idle (`busy_over_idle`). Figures go
to stdout and to --out (bench-results/batch.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmntp.bench.common import Row, now, progress, report_rows

MODALITIES = ("timeseries", "image")
_COLOURS = ("red", "green", "blue", "yellow", "white", "black", "orange", "purple")
_SHAPES = ("circle", "square", "triangle")
_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "elec_equip.csv"
FORECAST_CONTEXT = 96


def request_lines(modality: str, n: int) -> list[dict[str, Any]]:
    """n batch lines of one modality, each with its own seed."""
    if modality == "timeseries":
        from mmntp.api.series_io import read_series

        values, _ = read_series(str(_EXAMPLE))
        windows = len(values) - FORECAST_CONTEXT
        requests = [
            {
                "modality": "timeseries",
                "context": [float(v) for v in values[i % windows :][:FORECAST_CONTEXT]],
                "horizon": 12,
                "num_samples": 20,
            }
            for i in range(n)
        ]
    else:
        requests = [
            {
                "modality": "image",
                "prompt": f"a {_COLOURS[i % 8]} {_SHAPES[i % 3]} on a "
                f"{_COLOURS[(i + 3) % 8]} background",
            }
            for i in range(n)
        ]
    return [
        {"custom_id": f"{modality}-{i}", "request": {**r, "seed": i}}
        for i, r in enumerate(requests)
    ]


def one_at_a_time(target: str, lines: list[dict[str, Any]]) -> float:
    """Seconds to send `lines` one after another through the SDK (after one warm-up)."""
    from mmntp.batch.lines import parse_request
    from mmntp.client import Client

    with Client(target, timeout=600) as client:
        requests = [parse_request(x["request"], x["custom_id"]) for x in lines]
        for _ in client.generate(requests[0].prompt, requests[0].output, requests[0].sampling):
            pass
        start = now()
        for req in requests:
            for _ in client.generate(req.prompt, req.output, req.sampling):
                pass
        return now() - start


def batch_run(lines: list[dict[str, Any]], make_backend: Callable[[], Any], tmp: Path) -> float:
    """Seconds for `run_batch` over `lines` (after a one-line warm-up batch)."""
    from mmntp.batch.runner import run_batch

    def timed_run(name: str, some: list[dict[str, Any]]) -> float:
        path = tmp / f"{name}.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in some))
        start = now()
        report = run_batch(path, tmp / name, make_backend, progress=False)
        if report.counts.error:
            raise RuntimeError(f"bench batch: {report.counts.error} requests failed ({path})")
        return now() - start

    tag = f"{len(list(tmp.iterdir()))}"
    timed_run(f"warm-{tag}", lines[:1])
    return timed_run(f"run-{tag}", lines)


def measure(args: argparse.Namespace, tmp: Path) -> list[Row]:
    from mmntp.batch.runner import LocalBackend, RemoteBackend
    from mmntp.client import AsyncClient
    from mmntp.generation import Pipeline
    from mmntp.serve.thread import ServerThread

    def fresh() -> Any:
        return Pipeline.from_pretrained(args.model)

    counts = {"timeseries": args.forecasts, "image": args.images}
    rows = []
    for modality in args.modalities:
        n = counts[modality]
        lines = request_lines(modality, n)
        progress(f"{modality}: {n} requests one at a time through the SDK")
        with ServerThread(fresh()) as server:
            alone = n / one_at_a_time(server.target, lines)
        progress(f"{modality}: mmntp batch run (local)")
        local = fresh()
        batched = n / batch_run(lines, lambda: LocalBackend(local), tmp)  # noqa: B023
        progress(f"{modality}: mmntp batch run --server")
        with ServerThread(fresh()) as server:
            target = server.target
            remote = n / batch_run(
                lines,
                lambda: RemoteBackend(AsyncClient(target, timeout=600)),  # noqa: B023
                tmp,
            )
        extra = {"requests": n}
        rows.append(Row(f"batch_local_{modality}", batched, alone, "req/s", extra=extra))
        rows.append(Row(f"batch_server_{modality}", remote, alone, "req/s", extra=extra))
    return rows


def run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="mmntp-bench-batch-") as tmp:
        rows = measure(args, Path(tmp))
    if not getattr(args, "no_interactive", False):
        rows += _interactive(args)
    meta = {
        "benchmark": "batch",
        "baseline": "the same requests one at a time through the SDK to an in-process server",
        "model": args.model or "services/default",
        "modalities": list(args.modalities),
    }
    report_rows(rows, meta, args.out, args.json)
    return 0


def _interactive(args: argparse.Namespace) -> list[Row]:
    from mmntp.bench.batch_interactive import InteractiveSettings, interactive_rows
    from mmntp.generation import Pipeline

    settings = InteractiveSettings(probes=getattr(args, "probes", InteractiveSettings.probes))
    return interactive_rows(Pipeline.from_pretrained(args.model), settings)
