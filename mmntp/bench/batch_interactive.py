"""`mmntp bench batch`'s interactive rows: does a server batch slow interactive requests?

One server (in this process, on a free loopback port, with a temporary state folder)
answers the same small interactive requests, one at a time, twice: idle, then while a
batch of forecasts runs on it (BatchService). Each request's time to first chunk (send ->
first content chunk, through the SDK) is measured; the rows give p50 and p99 with the
batch running (`mmntp`) against idle (`baseline`), and `busy_over_idle` (the target is
<= 1.5 for p99). The batch is cancelled afterwards. Nothing here asserts a time.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from mmntp.bench.common import Row, now, percentile, progress

TTFT_TARGET = 1.5  # the bound on p99 with a batch running / idle


@dataclass(frozen=True)
class InteractiveSettings:
    probes: int = 40  # interactive requests per phase (idle, busy)
    batch_lines: int = 200  # forecasts in the background batch (more than the probes need)
    batch_samples: int = 20  # sample paths per forecast (engine rows)
    max_tokens: int = 8  # of each interactive text request
    gap_seconds: float = 0.05  # between probes: arrivals fall at any point of a batch step
    seed: int = 0
    batch_rows: int | None = None  # the server's batch_rows / batch_idle_seconds
    batch_idle_seconds: float | None = None  # (None: ServerConfig's defaults)


def batch_lines(settings: InteractiveSettings) -> list[str]:
    rng = random.Random(settings.seed)
    lines = []
    for i in range(settings.batch_lines):
        context = [round(rng.uniform(50, 150), 2) for _ in range(64)]
        request = {
            "modality": "timeseries",
            "context": context,
            "horizon": 12,
            "num_samples": settings.batch_samples,
            "seed": i,
        }
        lines.append(json.dumps({"custom_id": f"bg-{i}", "request": request}))
    return lines


def probe_ttfts(client: Any, settings: InteractiveSettings, tag: str) -> list[float]:
    """Send the interactive requests one at a time; their times to first chunk (s)."""
    from mmntp.client import Final, SamplingParams, TextOutput

    ttfts = []
    for i in range(settings.probes):
        start, first = now(), None
        sampling = SamplingParams(seed=settings.seed + i)
        output = TextOutput(max_tokens=settings.max_tokens)
        for chunk in client.generate(f"{tag} request {i}: ", output, sampling):
            if first is None and not isinstance(chunk, Final):
                first = now() - start
        ttfts.append(first if first is not None else now() - start)
        time.sleep(settings.gap_seconds)
    return ttfts


def measure(pipe: Any, settings: InteractiveSettings) -> dict[str, list[float]]:
    """{"idle": ttfts, "busy": ttfts} on one in-process server over `pipe`."""
    from mmntp.client import Client
    from mmntp.serve.server import ServerConfig
    from mmntp.serve.thread import ServerThread

    with tempfile.TemporaryDirectory(prefix="mmntp-bench-batch-") as state:
        tuning = {"batch_rows": settings.batch_rows}
        tuning["batch_idle_seconds"] = settings.batch_idle_seconds
        given = {k: v for k, v in tuning.items() if v is not None}
        config = ServerConfig(port=0, warmup=False, state_dir=state, **given)
        with ServerThread(pipe, config) as server, Client(server.target, timeout=120) as client:
            probe_ttfts(client, settings, "warm-up")  # first-call costs out of both phases
            progress(f"interactive: {settings.probes} requests on the idle server")
            idle = probe_ttfts(client, settings, "idle")
            job = client.submit_batch(batch_lines(settings))
            _wait_running(client, job.id, pipe)
            progress(f"interactive: {settings.probes} requests with batch {job.id} running")
            busy = probe_ttfts(client, settings, "busy")
            after = client.get_batch(job.id)
            client.cancel_batch(job.id)
    if after.ended:
        progress("warning: the batch ended before the busy phase did; raise batch_lines")
    return {"idle": idle, "busy": busy, "batch_done": [after.done]}


def _wait_running(client: Any, batch_id: str, pipe: Any, timeout: float = 60.0) -> None:
    """Until the batch has rows in the engine (it is really running)."""
    end = time.monotonic() + timeout
    while not pipe.engine.has_unfinished():
        if time.monotonic() > end or client.get_batch(batch_id).ended:
            raise RuntimeError(f"batch {batch_id} never reached the engine")
        time.sleep(0.01)


def interactive_rows(pipe: Any, settings: InteractiveSettings | None = None) -> list[Row]:
    """The p50 and p99 rows: time to first chunk with a batch running vs idle."""
    settings = settings or InteractiveSettings()
    ttfts = measure(pipe, settings)
    rows = []
    for q in (50, 99):
        busy = percentile(ttfts["busy"], q) * 1000
        idle = percentile(ttfts["idle"], q) * 1000
        extra: dict[str, Any] = {"busy_over_idle": busy / idle, "probes": settings.probes}
        if q == 99:
            extra["target_busy_over_idle"] = TTFT_TARGET
        rows.append(
            Row(
                f"interactive ttft p{q}: batch running vs idle",
                busy,
                idle,
                "ms",
                higher_is_better=False,
                extra=extra,
            )
        )
    return rows
