"""Scenario 3 of `mmntp bench engine`: TTFT of a prompt sharing a long prefix with an
earlier request, prefix caching on vs off."""

from __future__ import annotations

import random

from mmntp.bench.common import Row, median, now, progress
from mmntp.bench.engine_pair import (
    GREEDY,
    SEED,
    Pair,
    Settings,
    random_ids,
    request_id,
    warm_up,
)
from mmntp.engine import Engine, EngineConfig, Request, free_plan


def prefix_ttft(engine: Engine, pair: Pair, s: Settings, seed: int) -> list[float]:
    """Per trial: complete a request on a fresh prefix, then time a second one sharing it."""
    rng = random.Random(seed)
    tail = s.prefix_prompt - s.prefix_shared
    samples = []
    for _ in range(s.prefix_trials):
        shared = random_ids(rng, pair.vocab_size, s.prefix_shared)
        first = Request(
            request_id("pfx"), shared + random_ids(rng, pair.vocab_size, tail), free_plan(1), GREEDY
        )
        engine.run_to_completion([first])
        second = Request(
            request_id("pfx"), shared + random_ids(rng, pair.vocab_size, tail), free_plan(1), GREEDY
        )
        second.arrival_time = now()
        engine.add_request(second)
        while not second.output_ids:
            engine.step()
        samples.append(now() - second.arrival_time)
        while engine.has_unfinished():
            engine.step()
    return samples


def bench_prefix(pair: Pair, s: Settings) -> Row:
    progress(
        f"scenario 3: TTFT of a {s.prefix_prompt}-token prompt sharing a "
        f"{s.prefix_shared}-token prefix, prefix caching on vs off"
    )
    on = Engine(pair.model, EngineConfig(enable_prefix_caching=True))
    off = Engine(pair.model, EngineConfig(enable_prefix_caching=False))
    for engine in (on, off):
        warm_up(pair, engine, s.prefix_prompt)
    on.kv.reset_prefix_cache_stats()
    ttft_on = prefix_ttft(on, pair, s, SEED + 4)
    ttft_off = prefix_ttft(off, pair, s, SEED + 4)
    ratio = median(ttft_off) / median(ttft_on)
    return Row(
        "prefix_ttft",
        1e3 * median(ttft_on),
        1e3 * median(ttft_off),
        "ms",
        higher_is_better=False,
        extra={
            "baseline_is": "mmntp, prefix caching off",
            "prompt_tokens": s.prefix_prompt,
            "shared_prefix_tokens": s.prefix_shared,
            "trials": s.prefix_trials,
            "hit_rate": on.kv.prefix_cache_hit_rate,
            "target": ">= 5x",
            "target_met": ratio >= 5,
        },
    )
