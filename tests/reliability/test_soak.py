"""A soak: a real server under a steady mix of requests for a long time, its memory
sampled; the resident set must level off. Behind the `slow` marker:

    MMNTP_SOAK_SECONDS=1800 python3 -m pytest -q -m slow tests/reliability/test_soak.py

Figures (RSS samples and the growth over the second half) go to bench-results/soak.json.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from serving import DEFAULT_SERVICE, ROOT, ServerThread

from mmntp.api import (
    AudioOutput,
    FieldError,
    ImageOutput,
    SamplingParams,
    TextOutput,
    TimeSeriesOutput,
)
from mmntp.client import Client, ClientError
from mmntp.generation import Pipeline

SECONDS = float(os.environ.get("MMNTP_SOAK_SECONDS", "1800"))
PACE = 0.1  # seconds between requests: a steady load that leaves the CPU to the server
# Allowed growth of the resident set over the second half of the soak: allocator noise
# and caches that fill once, not a leak (the issue saw 23 MB/min).
MAX_GROWTH_MB = 24.0


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _one(client: Client, i: int) -> None:
    """One request of the mix: each output kind, a stream dropped early, a bad request."""
    kind = i % 6
    seed = SamplingParams(seed=i)
    if kind == 0:
        series = 10 + np.sin(np.arange(120) * 2 * np.pi / 12) + 0.01 * i
        client.forecast(series, horizon=12, num_samples=8, seed=i)
    elif kind == 1:
        list(client.generate("The ", TextOutput(max_tokens=24), seed))
    elif kind == 2:
        list(client.generate("a red circle on a blue background", ImageOutput(), seed))
    elif kind == 3:
        list(client.generate("a sine tone at 440 Hz", AudioOutput(seconds=0.5), seed))
    elif kind == 4:
        stream = client.generate("The ", TextOutput(max_tokens=200), seed)
        next(stream)
        stream.close()  # the client leaves mid-stream: the server aborts the request
    else:
        with contextlib.suppress(ClientError, FieldError):
            list(client.generate("hi", TimeSeriesOutput(horizon=0), seed))


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 600)
def test_memory_levels_off_under_a_long_steady_load():
    pipe = Pipeline.from_pretrained(DEFAULT_SERVICE)
    samples: list[tuple[float, float]] = []
    with ServerThread(pipe) as server, Client(server.target, timeout=120) as client:
        start = last = time.monotonic()
        i = 0
        while time.monotonic() - start < SECONDS:
            _one(client, i)
            i += 1
            if time.monotonic() - last >= 10 or not samples:
                samples.append((time.monotonic() - start, _rss_mb()))
                last = time.monotonic()
            time.sleep(PACE)
        samples.append((time.monotonic() - start, _rss_mb()))
    t = np.array([s[0] for s in samples])
    rss = np.array([s[1] for s in samples])
    second = t >= t[-1] / 2
    growth = float(rss[second].max() - rss[second][0])
    slope = float(np.polyfit(t[second] / 60, rss[second], 1)[0]) if second.sum() > 2 else 0.0
    report = {
        "seconds": SECONDS,
        "requests": i,
        "rss_mb": [[round(a, 1), round(b, 1)] for a, b in samples],
        "second_half_growth_mb": round(growth, 1),
        "second_half_slope_mb_per_min": round(slope, 2),
    }
    out = ROOT / "bench-results" / "soak.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "rss_mb"}))
    assert growth <= MAX_GROWTH_MB, report
