"""`mmntp bench serve`: latency and throughput of a running mmntp server under load.

Requests alternate over the picked modalities (text: a short English prompt; timeseries:
a 96-value seeded seasonal series) and are sent on one gRPC channel, many streams at once,
either as Poisson arrivals at `--rate` per second or closed-loop with `--concurrency` in
flight. Per request it records the time to the first chunk, the gaps between chunks and
the end-to-end latency; it reports their p50/p90/p99 overall and per modality, the
throughput over the makespan and the failures by status code.

`--fairness` runs the fairness scenario instead (issue 29): key A (`--flood-api-key`)
keeps `--flood-concurrency` of the jobs above in flight while key B (`--api-key`) sends
`--requests` small text requests one at a time; B's latency p50/p99 under the flood is
reported against B's own idle baseline of the same run (as many requests, before the
flood). The server's fair admission between keys is what keeps the ratio small.

Nothing here asserts a time: it prints figures and writes them to `--out` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmntp.bench.common import machine_info, now, percentile, progress, round_figures

DEFAULT_RATE = 4.0  # requests/s when neither --rate nor --concurrency is given
CONTEXT_LENGTH = 96  # forecast history length (8 seasons of 12)
SEASON = 12
FORECAST_SAMPLES = 8  # small: the bench measures serving, not forecast quality
PERCENTILES = (50, 90, 99)
OK = "OK"
API_KEY_ENV = "MMNTP_API_KEY"  # the same variable the rest of the CLI reads

TEXT_PROMPTS = (
    "Once upon a time",
    "The weather today is",
    "In the morning the market",
    "She opened the door and",
    "The best way to learn is",
    "After the long winter,",
    "The river flows past the",
    "He wrote a letter to",
)


# -- the workload ------------------------------------------------------------------------


@dataclass
class Job:
    """One request to send: its modality and what `AsyncClient.generate` takes."""

    index: int
    modality: str
    prompt: Any
    output: Any
    sampling: Any


@dataclass
class Outcome:
    """What one request did: clock readings (bench clock, seconds) and how it ended."""

    index: int
    modality: str
    start: float
    end: float = math.nan
    chunk_times: list[float] = field(default_factory=list)  # non-Final chunks, in order
    output_tokens: int = 0
    status: str = OK

    @property
    def ok(self) -> bool:
        return self.status == OK

    def ttft(self) -> float | None:
        """Send -> first content chunk, or None if the stream had none."""
        return self.chunk_times[0] - self.start if self.chunk_times else None

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:])]

    def latency(self) -> float:
        return self.end - self.start


def synthetic_series(rng: random.Random, length: int = CONTEXT_LENGTH) -> list[float]:
    """A seasonal series with trend and noise; level, amplitude and phase vary per request."""
    level = rng.uniform(50.0, 150.0)
    amplitude = rng.uniform(0.1, 0.3) * level
    trend = rng.uniform(-0.2, 0.5)
    phase = rng.uniform(0.0, 2 * math.pi)
    return [
        level
        + trend * t
        + amplitude * math.sin(2 * math.pi * t / SEASON + phase)
        + rng.gauss(0.0, 0.03 * level)
        for t in range(length)
    ]


def make_jobs(args: argparse.Namespace) -> list[Job]:
    """`args.requests` jobs alternating over `args.modalities`, all drawn from `args.seed`."""
    from mmntp.api import SamplingParams, TextOutput, TimeSeriesOutput, TimeSeriesPart

    rng = random.Random(f"{args.seed}:prompts")  # a stream apart from the arrivals'
    jobs = []
    for i in range(args.requests):
        modality = args.modalities[i % len(args.modalities)]
        seed = args.seed + i  # distinct per request, reproducible per run
        if modality == "text":
            prompt: Any = rng.choice(TEXT_PROMPTS)
            output: Any = TextOutput(max_tokens=args.max_tokens)
            sampling = SamplingParams(seed=seed)
        else:
            prompt = TimeSeriesPart(synthetic_series(rng))
            output = TimeSeriesOutput(horizon=args.horizon, num_samples=FORECAST_SAMPLES)
            sampling = SamplingParams(seed=seed)
        jobs.append(Job(i, modality, prompt, output, sampling))
    return jobs


def arrival_offsets(n: int, rate: float, seed: int) -> list[float]:
    """Poisson arrival times (s from the start, first at 0); rate inf sends all at once."""
    if math.isinf(rate):
        return [0.0] * n
    rng = random.Random(f"{seed}:arrivals")
    offsets, t = [], 0.0
    for _ in range(n):
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


# -- sending -----------------------------------------------------------------------------


async def send(client: Any, job: Job, timeout: float | None) -> Outcome:
    """Send one request and time its stream; a failure is recorded, never raised."""
    from mmntp.client import ClientError, Final

    outcome = Outcome(job.index, job.modality, start=now())
    try:
        stream = client.generate(job.prompt, job.output, job.sampling, timeout=timeout)
        async for chunk in stream:
            if isinstance(chunk, Final):
                outcome.output_tokens = chunk.output_tokens
            else:
                outcome.chunk_times.append(now())
    except ClientError as err:
        outcome.status = err.code.name
    outcome.end = now()
    return outcome


class Tracker:
    """Counts finished requests and prints a progress line about every tenth of the run."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self.every = max(1, total // 10)

    def finished(self, outcome: Outcome) -> Outcome:
        self.done += 1
        self.failed += not outcome.ok
        if self.done % self.every == 0 or self.done == self.total:
            progress(f"{self.done}/{self.total} done, {self.failed} failed")
        return outcome


async def open_loop(
    client: Any, jobs: Sequence[Job], offsets: Sequence[float], timeout: float | None
) -> list[Outcome]:
    """Send each job at its arrival time, however many are still in flight (open loop)."""
    tracker = Tracker(len(jobs))

    async def at(job: Job, offset: float) -> Outcome:
        await asyncio.sleep(max(0.0, start + offset - now()))
        return tracker.finished(await send(client, job, timeout))

    start = now()
    return list(await asyncio.gather(*(at(j, o) for j, o in zip(jobs, offsets))))


async def closed_loop(
    client: Any, jobs: Sequence[Job], concurrency: int, timeout: float | None
) -> list[Outcome]:
    """Keep `concurrency` requests in flight: each worker sends its next job when one ends."""
    tracker = Tracker(len(jobs))
    queue = iter(jobs)  # shared: workers take jobs in order; asyncio makes next() atomic
    outcomes: list[Outcome] = []

    async def worker() -> None:
        for job in queue:
            outcomes.append(tracker.finished(await send(client, job, timeout)))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)))))
    return sorted(outcomes, key=lambda o: o.index)


async def check_server(client: Any, timeout: float | None) -> None:
    """Open the channel and report the server's health, so request 0 pays no connect cost."""
    from mmntp.client import ClientError

    try:
        status = await client.health(timeout=timeout)
    except ClientError as err:
        # Still run the load: the failures are what the report is for.
        progress(f"health check failed: {err.code.name}: {err.details}")
        return
    progress(f"server health: {status}")


async def run_load(
    args: argparse.Namespace, jobs: Sequence[Job]
) -> tuple[list[Outcome], list[Outcome]]:
    """Idle baseline, then the whole load, on one AsyncClient (one channel): both outcomes."""
    from mmntp.client import AsyncClient

    # retries=0: a re-sent request would hide UNAVAILABLE and inflate latencies.
    client = AsyncClient(
        args.server,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        tls_ca=args.tls_ca,
        timeout=args.timeout,
        retries=0,
    )
    async with client:
        await check_server(client, min(args.timeout or 5.0, 5.0))
        idle = await idle_baseline(client, jobs, args)
        if args.concurrency:
            return idle, await closed_loop(client, jobs, args.concurrency, args.timeout)
        offsets = arrival_offsets(len(jobs), load_rate(args), args.seed)
        return idle, await open_loop(client, jobs, offsets, args.timeout)


async def idle_baseline(client: Any, jobs: Sequence[Job], args: argparse.Namespace) -> list:
    """The baseline of the same run: each modality's first jobs sent one at a time."""
    firsts = [
        [j for j in jobs if j.modality == m][: args.baseline_requests] for m in args.modalities
    ]
    picked = [j for group in firsts for j in group]
    if picked:
        progress(f"idle baseline: {len(picked)} requests one at a time")
    return [await send(client, job, args.timeout) for job in picked]


# -- the fairness scenario ---------------------------------------------------------------

SMALL_TOKENS = 8  # B's small text requests


def small_jobs(args: argparse.Namespace) -> list[Job]:
    """Key B's requests: short text prompts, SMALL_TOKENS tokens each."""
    from mmntp.api import SamplingParams, TextOutput

    rng = random.Random(f"{args.seed}:small")
    return [
        Job(
            i,
            "text",
            rng.choice(TEXT_PROMPTS),
            TextOutput(max_tokens=SMALL_TOKENS),
            SamplingParams(seed=args.seed + i),
        )
        for i in range(args.requests)
    ]


def _client(args: argparse.Namespace, key: str | None) -> Any:
    from mmntp.client import AsyncClient

    return AsyncClient(
        args.server, api_key=key, tls_ca=args.tls_ca, timeout=args.timeout, retries=0
    )


async def _flood(args: argparse.Namespace, started: Any, stop: Any) -> list[Outcome]:
    """Key A's closed loop: flood_concurrency requests in flight until `stop` is set
    (asyncio or multiprocessing events: anything with set() and is_set())."""
    heavy = make_jobs(args)
    flood: list[Outcome] = []

    async def flooder(a: Any, k: int) -> None:
        i = k
        while not stop.is_set():
            flood.append(await send(a, heavy[i % len(heavy)], args.timeout))
            i += args.flood_concurrency

    async with _client(args, args.flood_api_key) as a:
        workers = [asyncio.create_task(flooder(a, k)) for k in range(args.flood_concurrency)]
        started.set()
        while not stop.is_set():
            await asyncio.sleep(0.02)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return flood


def _flood_process(args: argparse.Namespace, started: Any, stop: Any, results: Any) -> None:
    """The flood in a process of its own (multiprocessing target): its outcomes back
    through `results` (bench clock readings are system-wide: perf_counter is monotonic)."""
    results.put(asyncio.run(_flood(args, started, stop)))


async def fairness_load(args: argparse.Namespace) -> dict[str, list[Outcome]]:
    """B idle, then B under A's flood (closed loop): B's outcomes both ways and A's.

    A's flood runs in a child process, as another client would: B's client does not
    share its event loop (and the GIL) with A's streams, so B's latency is the server's
    doing. `--flood-in-process` puts both on one loop (the measurement before 2026-12-08).
    """
    small = small_jobs(args)
    async with _client(args, args.api_key or os.environ.get(API_KEY_ENV) or None) as b:
        await check_server(b, min(args.timeout or 5.0, 5.0))
        progress(f"key B idle: {len(small)} small requests one at a time")
        idle = [await send(b, job, args.timeout) for job in small]
        progress(f"key A floods with {args.flood_concurrency} in flight; key B sends again")
        if getattr(args, "flood_in_process", False):
            started, stop = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(_flood(args, started, stop))
            loaded = await _measure_under(b, small, args, started)
            stop.set()
            flood = await task
        else:
            ctx = multiprocessing.get_context("spawn")
            started, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
            child = ctx.Process(target=_flood_process, args=(args, started, stop, results))
            child.start()
            try:
                await asyncio.to_thread(started.wait, 120)
                loaded = await _measure_under(b, small, args, started)
            finally:
                stop.set()
            flood = await asyncio.to_thread(results.get, True, 120)
            child.join(30)
    return {"idle": idle, "loaded": loaded, "flood": flood}


async def _measure_under(b: Any, small: list[Job], args: argparse.Namespace, started: Any):
    while not started.is_set():
        await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)  # the flood fills the engine and its queue first
    return [await send(b, job, args.timeout) for job in small]


def fairness_summary(runs: dict[str, list[Outcome]]) -> dict[str, Any]:
    """B's latency idle and under the flood, their ratios, and what A's flood did."""
    idle = quantiles_ms(o.latency() for o in runs["idle"] if o.ok)
    loaded = quantiles_ms(o.latency() for o in runs["loaded"] if o.ok)
    flood = runs["flood"]
    # Key A's throughput while B was measured: A's calls that ended OK within B's window.
    window = [o for o in runs["loaded"] if not math.isnan(o.end)]
    t0, t1 = (min(o.start for o in window), max(o.end for o in window)) if window else (0, 0)
    done = [o for o in flood if o.ok and t0 <= o.end <= t1]
    seconds = t1 - t0
    return {
        "small_idle_ms": idle,
        "small_under_flood_ms": loaded,
        "small_failed": dict(Counter(o.status for o in runs["loaded"] if not o.ok)),
        "ratio_p50": _ratio(loaded["p50"], idle["p50"]),
        "ratio_p99": _ratio(loaded["p99"], idle["p99"]),
        "ratio_p99_over_idle_p50": _ratio(loaded["p99"], idle["p50"]),
        "flood_requests": len(flood),
        "flood_ok": sum(o.ok for o in flood),
        "flood_errors": dict(Counter(o.status for o in flood if not o.ok)),
        "flood_ok_per_s": len(done) / seconds if seconds > 0 else math.nan,
        "flood_tokens_per_s": sum(o.output_tokens for o in done) / seconds
        if seconds > 0
        else math.nan,
    }


def format_fairness(payload: dict[str, Any]) -> str:
    f, s = payload["fairness"], payload["settings"]
    title = (
        f"bench serve --fairness: {s['server']}, key A floods with {s['flood_concurrency']} "
        f"in flight ({','.join(s['modalities'])}), key B sends {s['requests']} small "
        f"requests ({SMALL_TOKENS} text tokens) one at a time"
    )
    rows = [
        ["idle", _num(f["small_idle_ms"]["p50"]), _num(f["small_idle_ms"]["p99"]), "", ""],
        [
            "under flood",
            _num(f["small_under_flood_ms"]["p50"]),
            _num(f["small_under_flood_ms"]["p99"]),
            _times(f["ratio_p50"]),
            _times(f["ratio_p99"]),
        ],
    ]
    table = _table(["key B", "p50 ms", "p99 ms", "p50 / idle", "p99 / idle p99"], rows)
    tail = (
        f"key B p99 under flood / idle p50: {_times(f['ratio_p99_over_idle_p50'])}; "
        f"key A: {f['flood_ok']} of {f['flood_requests']} ok {f['flood_errors'] or ''}; "
        f"while B ran: {_num(f['flood_ok_per_s'])} calls/s, "
        f"{_num(f['flood_tokens_per_s'])} output tokens/s"
    )
    return "\n\n".join([title, table, tail])


def run_fairness(args: argparse.Namespace) -> int:
    if not args.flood_api_key:
        raise ValueError("--fairness needs --flood-api-key (key A) besides --api-key (key B)")
    meta = {**settings(args), "flood_concurrency": args.flood_concurrency}
    meta["load"] = {"mode": "fairness", "flood_concurrency": args.flood_concurrency}
    runs = asyncio.run(fairness_load(args))
    payload = {
        "benchmark": "serve-fairness",
        "machine": machine_info(),
        "settings": meta,
        "fairness": fairness_summary(runs),
    }
    if args.json:
        print(json.dumps(round_figures(payload)), flush=True)
    else:
        print(format_fairness(payload), flush=True)
    progress(f"wrote {write_payload(args.out, payload)}")
    return 0 if any(o.ok for o in runs["loaded"]) else 1


def load_rate(args: argparse.Namespace) -> float:
    return DEFAULT_RATE if args.rate is None else args.rate


# -- the report --------------------------------------------------------------------------


def quantiles_ms(samples: Iterable[float]) -> dict[str, float]:
    """{"p50": ms, "p90": ms, "p99": ms} of samples in seconds (nan when there are none)."""
    values = list(samples)
    return {f"p{q}": percentile(values, q) * 1e3 for q in PERCENTILES}


def section(outcomes: Sequence[Outcome], makespan: float) -> dict[str, Any]:
    """The figures for one group of requests; latencies count successful requests only."""
    good = [o for o in outcomes if o.ok]
    chunks = sum(len(o.chunk_times) for o in good)
    tokens = sum(o.output_tokens for o in good)
    per_s = 1.0 / makespan if makespan > 0 else math.nan
    return {
        "requests": len(outcomes),
        "ok": len(good),
        "errors": dict(Counter(o.status for o in outcomes if not o.ok)),
        "ttft_ms": quantiles_ms(t for o in good if (t := o.ttft()) is not None),
        "inter_chunk_ms": quantiles_ms(g for o in good for g in o.gaps()),
        "latency_ms": quantiles_ms(o.latency() for o in good),
        "chunks": chunks,
        "output_tokens": tokens,
        "requests_per_s": len(good) * per_s,
        "chunks_per_s": chunks * per_s,
        "tokens_per_s": tokens * per_s,
    }


def summarize(outcomes: Sequence[Outcome], modalities: Sequence[str]) -> dict[str, Any]:
    """Overall and per-modality sections over the makespan (first send -> last end)."""
    makespan = max(o.end for o in outcomes) - min(o.start for o in outcomes)
    return {
        "makespan_s": makespan,
        "overall": section(outcomes, makespan),
        "modalities": {
            m: section([o for o in outcomes if o.modality == m], makespan) for m in modalities
        },
    }


def idle_section(idle: Sequence[Outcome], modalities: Sequence[str]) -> dict[str, Any]:
    """Per-modality latency of the one-at-a-time baseline requests."""
    out = {}
    for m in modalities:
        good = [o for o in idle if o.modality == m and o.ok]
        out[m] = {
            "requests": len(good),
            "ttft_ms": quantiles_ms(t for o in good if (t := o.ttft()) is not None),
            "latency_ms": quantiles_ms(o.latency() for o in good),
        }
    return out


def load_over_idle(payload: dict[str, Any]) -> dict[str, Any]:
    """How much slower each modality is under the load than alone (ratios; 1 = no cost)."""
    ratios = {}
    for m, idle in payload["idle"].items():
        loaded = payload["modalities"][m]
        base_ttft, base_e2e = idle["ttft_ms"]["p50"], idle["latency_ms"]["p50"]
        ratios[m] = {
            "ttft_p50": _ratio(loaded["ttft_ms"]["p50"], base_ttft),
            "ttft_p99": _ratio(loaded["ttft_ms"]["p99"], base_ttft),
            "latency_p50": _ratio(loaded["latency_ms"]["p50"], base_e2e),
        }
    return ratios


def _ratio(value: float, base: float) -> float:
    return value / base if base and not math.isnan(base) else math.nan


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The knobs of this run, as the results file records them."""
    if args.concurrency:
        load: dict[str, Any] = {"mode": "concurrency", "concurrency": args.concurrency}
    else:
        rate = load_rate(args)
        # JSON has no infinity: "inf" keeps the file standard and the meaning plain.
        load = {"mode": "poisson", "rate": "inf" if math.isinf(rate) else rate}
    return {
        "server": args.server,
        "requests": args.requests,
        "modalities": list(args.modalities),
        "load": load,
        "max_tokens": args.max_tokens,
        "horizon": args.horizon,
        "num_samples": FORECAST_SAMPLES,
        "context_length": CONTEXT_LENGTH,
        "seed": args.seed,
        "baseline_requests": args.baseline_requests,
        "timeout_s": args.timeout,
        "tls": bool(args.tls_ca),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns under a header and a rule."""
    lines = [list(header), *map(list, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _times(ratio: float) -> str:
    return "n/a" if not math.isfinite(ratio) else f"{ratio:.2f}x"


def _groups(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [("all", summary["overall"]), *summary["modalities"].items()]


def latency_table(summary: dict[str, Any]) -> str:
    """One line per group and metric: p50, p90, p99 in milliseconds."""
    metrics = (
        ("ttft_ms", "first chunk"),
        ("inter_chunk_ms", "inter-chunk"),
        ("latency_ms", "end-to-end"),
    )
    rows = []
    for name, sec in _groups(summary):
        for key, label in metrics:
            rows.append([name, label, *(_num(sec[key][f"p{q}"]) for q in PERCENTILES)])
            name = ""  # the group's name on its first line only
    return _table(["modality", "latency (ms)", *(f"p{q}" for q in PERCENTILES)], rows)


def throughput_table(summary: dict[str, Any]) -> str:
    """One line per group: counts, rates over the makespan and errors by status code."""
    rows = []
    for name, sec in _groups(summary):
        errors = ", ".join(f"{code} {n}" for code, n in sorted(sec["errors"].items())) or "-"
        rows.append(
            [
                name,
                str(sec["requests"]),
                str(sec["ok"]),
                _num(sec["requests_per_s"], 2),
                _num(sec["chunks_per_s"]),
                _num(sec["tokens_per_s"]),
                errors,
            ]
        )
    header = ["modality", "requests", "ok", "req/s", "chunks/s", "tokens/s", "errors"]
    return _table(header, rows)


def describe_load(load: dict[str, Any]) -> str:
    """'concurrency 4', 'Poisson 4/s' or 'all at once', from settings()["load"]."""
    if load["mode"] == "fairness":
        return f"fairness, flood of {load['flood_concurrency']}"
    if load["mode"] == "concurrency":
        return f"concurrency {load['concurrency']}"
    return "all at once" if load["rate"] == "inf" else f"Poisson {load['rate']:g}/s"


def format_report(payload: dict[str, Any]) -> str:
    """The human-readable report: a title line, the latency and throughput tables."""
    s = payload["settings"]
    title = (
        f"bench serve: {s['server']}, {s['requests']} requests, {describe_load(s['load'])}, "
        f"makespan {payload['makespan_s']:.2f} s"
    )
    tables = [title, latency_table(payload), throughput_table(payload)]
    return "\n\n".join([*tables, baseline_table(payload)])


def baseline_table(payload: dict[str, Any]) -> str:
    """Idle (one request at a time) p50s and the load's p50/p99 as multiples of them."""
    rows = []
    for m, idle in payload["idle"].items():
        r = payload["load_over_idle"][m]
        rows.append(
            [
                m,
                _num(idle["ttft_ms"]["p50"]),
                _num(idle["latency_ms"]["p50"]),
                _times(r["ttft_p50"]),
                _times(r["ttft_p99"]),
                _times(r["latency_p50"]),
            ]
        )
    header = ["idle", "first chunk ms", "end-to-end ms", "load ttft p50", "ttft p99", "e2e p50"]
    return _table(header, rows)


# -- entry point -------------------------------------------------------------------------


def write_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write the results JSON (creating parent folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # 4 significant digits; nan (a figure with no samples) becomes null
    path.write_text(json.dumps(round_figures(payload), indent=2) + "\n")
    return path


def run(args: argparse.Namespace) -> int:
    """Run the load, print the report (table, or JSON with --json), write --out.

    Exit code 0 when at least one request succeeded, 1 when every one failed.
    """
    if getattr(args, "fairness", False):
        return run_fairness(args)
    jobs = make_jobs(args)
    meta = settings(args)
    progress(f"sending {len(jobs)} requests to {args.server}, {describe_load(meta['load'])}")
    idle, outcomes = asyncio.run(run_load(args, jobs))
    payload: dict[str, Any] = {
        "benchmark": "serve",
        "machine": machine_info(),
        "settings": meta,
        **summarize(outcomes, args.modalities),
    }
    payload["idle"] = idle_section(idle, args.modalities)
    payload["load_over_idle"] = load_over_idle(payload)
    if args.json:
        print(json.dumps(round_figures(payload)), flush=True)
    else:
        print(format_report(payload), flush=True)
    path = write_payload(args.out, payload)
    progress(f"wrote {path}")
    return 0 if payload["overall"]["ok"] else 1
