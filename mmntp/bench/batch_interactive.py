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
from dataclasses import dataclass, replace
from typing import Any

from mmntp.bench.common import Row, now, percentile, progress

TTFT_TARGET = 1.5  # the bound on p99 with a batch running / idle


@dataclass(frozen=True)
class InteractiveSettings:
    probes: int = 60  # interactive requests per phase (idle, busy), over all rounds
    rounds: int = 3  # idle and busy phases alternate this many times
    batch_lines: int = 200  # forecasts in the background batch (more than the probes need)
    batch_samples: int = 20  # sample paths per forecast (engine rows)
    max_tokens: int = 8  # of each interactive text request
    # Between probes. Shorter than batch_idle_seconds: a client sending one request after
    # another (the batch stays parked); longer: each request finds the batch stepping.
    gap_seconds: float = 0.05
    seed: int = 0
    batch_rows: int | None = None  # the server's batch_rows / batch_idle_seconds
    batch_idle_seconds: float | None = None  # (None: ServerConfig's defaults)

    def __post_init__(self) -> None:
        for name in ("probes", "rounds", "batch_lines", "batch_samples", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


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


def probe_ttfts(client: Any, settings: InteractiveSettings, tag: str, n: int) -> list[float]:
    """Send the interactive requests one at a time; their times to first chunk (s)."""
    from mmntp.client import Final, SamplingParams, TextOutput

    ttfts = []
    for i in range(n):
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
    """{"idle": ttfts, "busy": ttfts, "batch_done": [requests finished while busy]} on one
    in-process server over `pipe`. Idle and busy phases alternate for `rounds` rounds (a
    new batch each round, cancelled after), so a drift in the machine's load weighs on
    both alike."""
    from mmntp.client import Client
    from mmntp.serve.server import ServerConfig
    from mmntp.serve.thread import ServerThread

    tuning = {"batch_rows": settings.batch_rows}
    tuning["batch_idle_seconds"] = settings.batch_idle_seconds
    given = {k: v for k, v in tuning.items() if v is not None}
    found: dict[str, list[float]] = {"idle": [], "busy": [], "batch_done": []}
    per_round = max(1, settings.probes // settings.rounds)
    with tempfile.TemporaryDirectory(prefix="mmntp-bench-batch-") as state:
        config = ServerConfig(port=0, warmup=False, state_dir=state, **given)
        with ServerThread(pipe, config) as server, Client(server.target, timeout=120) as client:
            probe_ttfts(client, settings, "warm-up", per_round)  # first-call costs out
            for r in range(settings.rounds):
                progress(f"interactive round {r + 1}/{settings.rounds}: idle, then a batch")
                found["idle"] += probe_ttfts(client, settings, "idle", per_round)
                job = client.submit_batch(batch_lines(settings))
                _wait_running(client, job.id, pipe)
                found["busy"] += probe_ttfts(client, settings, "busy", per_round)
                if client.cancel_batch(job.id).status != "cancelled":
                    progress("warning: the batch ended before the busy phase did")
                found["batch_done"].append(client.get_batch(job.id).done)
                _wait_drained(pipe)  # the next idle phase must find the engine empty
    return found


def _wait_drained(pipe: Any, timeout: float = 60.0) -> None:
    """Until the cancelled batch's aborted rows have left the engine (the aborts apply
    before the next step, and that step still has to run)."""
    end = time.monotonic() + timeout
    while pipe.engine.has_unfinished():
        if time.monotonic() > end:
            raise RuntimeError("the engine kept a cancelled batch's rows")
        time.sleep(0.01)


def _wait_running(client: Any, batch_id: str, pipe: Any, timeout: float = 60.0) -> None:
    """Until the batch has rows in the engine (it is really running)."""
    end = time.monotonic() + timeout
    while not pipe.engine.has_unfinished():
        if time.monotonic() > end or client.get_batch(batch_id).ended:
            raise RuntimeError(f"batch {batch_id} never reached the engine")
        time.sleep(0.01)


def sparse_gap(settings: InteractiveSettings) -> float:
    """A gap past the server's batch_idle_seconds: each request finds the batch stepping."""
    from mmntp.serve.server import ServerConfig

    idle = settings.batch_idle_seconds
    return (ServerConfig.batch_idle_seconds if idle is None else idle) + 0.3


def interactive_rows(pipe: Any, settings: InteractiveSettings | None = None) -> list[Row]:
    """p50 and p99 time to first chunk with a batch running vs idle, for requests sent one
    after another (`gap_seconds` apart) and for sparse ones (`sparse_gap` apart)."""
    settings = settings or InteractiveSettings()
    rows = []
    for pattern, gap in (("back-to-back", settings.gap_seconds), ("sparse", None)):
        run = replace(settings, gap_seconds=sparse_gap(settings) if gap is None else gap)
        if gap is None:  # a slower phase: fewer requests
            run = replace(run, probes=max(run.rounds, settings.probes // 2))
        ttfts = measure(pipe, run)
        for q in (50, 99):
            busy = percentile(ttfts["busy"], q) * 1000
            idle = percentile(ttfts["idle"], q) * 1000
            extra: dict[str, Any] = {
                "busy_over_idle": busy / idle,
                "probes": run.probes,
                "gap_s": run.gap_seconds,
                "batch_done_while_busy": sum(ttfts["batch_done"]),
            }
            if q == 99:
                extra["target_busy_over_idle"] = TTFT_TARGET
            name = f"interactive ttft p{q}, {pattern}: batch running vs idle"
            rows.append(Row(name, busy, idle, "ms", higher_is_better=False, extra=extra))
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m mmntp.bench.batch_interactive [--model DIR] [--probes N] [--json]`."""
    import argparse

    from mmntp.bench.common import report_rows
    from mmntp.generation import Pipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model or service folder (default: the bundled one)")
    parser.add_argument("--probes", type=int, default=InteractiveSettings.probes)
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--out", default="bench-results/batch_interactive.json")
    args = parser.parse_args(argv)
    pipe = Pipeline.from_pretrained(args.model)
    rows = interactive_rows(pipe, InteractiveSettings(probes=args.probes))
    meta = {"benchmark": "batch_interactive", "model": args.model or "services/default"}
    report_rows(rows, meta, args.out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
