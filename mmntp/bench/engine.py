"""`mmntp bench engine`: mmntp's Engine against Hugging Face transformers on the same weights.

A random `LlamaForCausalLM` is saved with safetensors, imported with `import_hf` and
loaded with `load_model`, so both sides run identical fp32 weights on the same threads.

Scenarios (docs/benchmarks.md has the method and the figures):
1. batch-1 greedy decode tokens/s, 16-token prompt, exactly 128 new tokens (tiny, ~50M);
2. 32 requests arriving as a Poisson process, prompts of 16..512 tokens, 64 new tokens
   each: throughput, TTFT and inter-token latency; transformers serves the same requests
   in left-padded batches of up to 8;
3. time to first token of a 1024-token prompt sharing a 960-token prefix with an earlier
   request, prefix caching on vs off.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmntp.api import SamplingParams
from mmntp.bench import add_engine_arguments
from mmntp.bench.common import (
    Row,
    format_table,
    median,
    now,
    percentile,
    progress,
    timed,
    write_results,
)
from mmntp.engine import Engine, EngineConfig, Request, free_plan
from mmntp.model.checkpoint import load_model
from mmntp.model.hf_import import import_hf
from mmntp.model.transformer import Transformer

GREEDY = SamplingParams(temperature=0.0)
SEED = 0

# Llama configs (transformers keyword arguments). intermediate_size follows mmntp's own
# SwiGLU rule: 8/3 * hidden rounded up to a multiple of 32.
TINY = dict(
    hidden_size=256,
    intermediate_size=704,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=4096,
    max_position_embeddings=2048,
)
M50 = dict(
    hidden_size=512,
    intermediate_size=1376,
    num_hidden_layers=12,
    num_attention_heads=8,
    num_key_value_heads=4,
    vocab_size=16384,
    max_position_embeddings=2048,
)
QUICK_TINY = dict(
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size=256,
    max_position_embeddings=256,
)
QUICK_M50 = {**QUICK_TINY, "num_hidden_layers": 3, "num_key_value_heads": 2, "vocab_size": 512}


@dataclass(frozen=True)
class Settings:
    """Every size the scenarios use; `quick()` shrinks them for the smoke test."""

    models: dict[str, dict[str, int]] = field(default_factory=lambda: {"tiny": TINY, "50m": M50})
    decode_prompt: int = 16
    decode_new: int = 128
    decode_runs: int = 5
    compile_decode: bool = True  # scenario 1 also runs the engine with compile_decode
    load_requests: int = 32
    load_prompt: tuple[int, int] = (16, 512)  # uniform, inclusive
    load_new: int = 64
    load_rate: float = 8.0  # requests per second (Poisson)
    load_max_batch: int = 8  # transformers baseline batch size
    load_kv_cache_bytes: int = 128 << 20  # holds all 32 requests at once: no preemption
    idle_trials: int = 5
    prefix_shared: int = 960
    prefix_prompt: int = 1024
    prefix_trials: int = 5

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            models={"tiny": QUICK_TINY, "50m": QUICK_M50},
            decode_prompt=8,
            decode_new=8,
            decode_runs=1,
            compile_decode=False,  # the smoke test skips the ~15 s compile
            load_requests=4,
            load_prompt=(8, 32),
            load_new=4,
            load_rate=200.0,
            load_max_batch=2,
            load_kv_cache_bytes=8 << 20,
            idle_trials=1,
            prefix_shared=48,
            prefix_prompt=64,
            prefix_trials=1,
        )


@dataclass
class Pair:
    """The same weights as a transformers model and as an mmntp Transformer."""

    name: str
    hf: Any  # transformers.LlamaForCausalLM
    model: Transformer
    vocab_size: int

    @property
    def num_parameters(self) -> int:
        return self.model.num_parameters()


def build_pair(name: str, llama: dict[str, int], workdir: Path) -> Pair:
    """Random Llama weights (fixed seed) -> safetensors -> import_hf -> load_model."""
    import transformers

    config = transformers.LlamaConfig(
        **llama,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(SEED)
    hf = transformers.LlamaForCausalLM(config).to(torch.float32).eval()
    src, dst = workdir / f"{name}-hf", workdir / f"{name}-mmntp"
    hf.save_pretrained(src, safe_serialization=True)
    import_hf(src, dst)
    model = load_model(dst, dtype=torch.float32).model.eval()
    return Pair(name, hf, model, llama["vocab_size"])


def random_ids(rng: random.Random, vocab_size: int, n: int) -> list[int]:
    return [rng.randrange(vocab_size) for _ in range(n)]


# -- the two generators ----------------------------------------------------------------


class _StampStreamer:
    """A transformers streamer that timestamps each step's tokens (the first put is the prompt).

    On CPU `generate` calls put() synchronously right after each step picks its tokens,
    so stamp k is when every row of the batch had its token k.
    """

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:  # noqa: ARG002 - only the time matters
        if self._prompt_seen:
            self.stamps.append(now())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def hf_generate(hf, prompts: list[list[int]], new_tokens: int, streamer=None) -> torch.Tensor:
    """Greedy, exactly `new_tokens` per row, left-padded batch -> new ids [B, new_tokens]."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)  # pad id 0, masked out
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p)
        mask[i, width - len(p) :] = 1
    out = hf.generate(
        ids,
        attention_mask=mask,
        do_sample=False,
        min_new_tokens=new_tokens,
        max_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=0,
        streamer=streamer,
    )
    new = out[:, width:]
    if new.shape[1] != new_tokens:
        raise RuntimeError(f"transformers produced {new.shape[1]} tokens, not {new_tokens}")
    return new


def mmntp_generate(engine: Engine, prompt: list[int], new_tokens: int, rid: str) -> list[int]:
    """One greedy request through the Engine, exactly `new_tokens` tokens -> its ids."""
    req = Request(rid, prompt, free_plan(new_tokens), GREEDY)
    engine.run_to_completion([req])
    if len(req.output_ids) != new_tokens:
        raise RuntimeError(f"mmntp produced {len(req.output_ids)} tokens, not {new_tokens}")
    return list(req.output_ids)


_ids = itertools.count()  # request ids unique across a whole run


def _rid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def warm_up(pair: Pair, engine: Engine, prompt_len: int) -> None:
    """Run both sides once on short and long prompts so kernels and allocators are warm."""
    rng = random.Random(SEED + 99)
    for n in (8, prompt_len):
        prompt = random_ids(rng, pair.vocab_size, n)
        hf_generate(pair.hf, [prompt, prompt[: max(1, n // 2)]], 4)
        mmntp_generate(engine, prompt, 4, _rid("warm"))


# -- scenario 1: batch-1 greedy decode -------------------------------------------------


def bench_decode(pair: Pair, s: Settings) -> Row:
    """Batch-1 greedy decode: transformers, the eager engine and (unless settings say
    otherwise) the engine with `compile_decode`, alternating within each run."""
    progress(f"scenario 1: decode_{pair.name} ({pair.num_parameters / 1e6:.1f}M params)")
    engines = {"eager": Engine(pair.model, EngineConfig())}
    warm_up(pair, engines["eager"], s.decode_prompt)
    compile_s = None
    if s.compile_decode:
        engines["compiled"] = Engine(pair.model, EngineConfig(compile_decode=True))
        compile_s = timed(engines["compiled"].warm_up)[0]
        progress(f"  compile_decode: warm-up with its compiles {compile_s:.1f} s")
    prompt = random_ids(random.Random(SEED + 1), pair.vocab_size, s.decode_prompt)
    hf_times, floor_times, hf_ids = [], [], None
    times: dict[str, list[float]] = {name: [] for name in engines}
    ids: dict[str, list[int]] = {}
    matvecs = weight_matvecs(pair.model, s.decode_new)
    matvecs()  # warm
    for run in range(s.decode_runs):
        floor_times.append(timed(matvecs)[0])
        t, new = timed(lambda: hf_generate(pair.hf, [prompt], s.decode_new))
        hf_times.append(t)
        hf_ids = new[0].tolist()
        for name, engine in engines.items():
            t, ids[name] = timed(
                lambda e=engine: mmntp_generate(e, prompt, s.decode_new, _rid("dec"))
            )
            times[name].append(t)
        progress(
            f"  run {run + 1}: transformers {t_str(hf_times[-1])}, "
            + ", ".join(f"mmntp {k} {t_str(v[-1])}" for k, v in times.items())
            + f", matrix-vector products alone {t_str(floor_times[-1])}"
        )
    floor = median(floor_times) / s.decode_new
    agree = {name: hf_ids == got for name, got in ids.items()}
    for name, got in ids.items():
        if not agree[name]:
            first = next(i for i, (a, b) in enumerate(zip(hf_ids, got)) if a != b)
            print(
                f"WARNING: decode_{pair.name} ({name}): greedy ids differ from transformers "
                f"at token {first}",
                flush=True,
            )
    best = "compiled" if "compiled" in engines else "eager"
    rate = {name: s.decode_new / median(t) for name, t in times.items()}
    mm_rate, hf_rate = rate[best], s.decode_new / median(hf_times)
    extra = {
        "params_m": pair.num_parameters / 1e6,
        "prompt_tokens": s.decode_prompt,
        "new_tokens": s.decode_new,
        "runs": s.decode_runs,
        "mmntp_engine": "compile_decode" if best == "compiled" else "eager",
        "tokens_agree": agree[best],
        "mmntp_ms_per_token": 1e3 / mm_rate,
        "baseline_ms_per_token": 1e3 / hf_rate,
        "eager_ms_per_token": 1e3 / rate["eager"],
        "eager_ratio": rate["eager"] / hf_rate,
        "eager_tokens_agree": agree["eager"],
        "compile_warm_up_s": compile_s,
        # Every batch-1 step reads every weight matrix once: the model's matrix-vector
        # products alone are a floor under any implementation's step time, so
        # baseline / floor bounds the ratio any engine can reach on these fp32 weights.
        "weight_floor_ms_per_token": 1e3 * floor,
        "ratio_bound": (1 / hf_rate) / floor,
    }
    if pair.name == "tiny":
        extra.update(target=">= 2x", target_met=mm_rate >= 2 * hf_rate)
    return Row(f"decode_{pair.name}", mm_rate, hf_rate, "tok/s", extra=extra)


def weight_matvecs(model: Transformer, tokens: int):
    """A callable doing only the model's matrix-vector products for `tokens` steps (every
    Linear of the trunk and the token head, in order, on a [1, in] input, each weight in
    the storage order the engine runs it: `use_decode_layout`'s once an Engine holds the
    model): what a batch-1 decode of that many tokens cannot avoid."""
    weights = [m.weight for m in model.layers.modules() if isinstance(m, torch.nn.Linear)]
    weights.append(model.heads["token"].proj.weight)
    inputs = [torch.randn(1, w.shape[1], dtype=w.dtype) for w in weights]

    def steps() -> None:
        for _ in range(tokens):
            for w, x in zip(weights, inputs):
                torch.nn.functional.linear(x, w)

    return steps


def t_str(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


# -- scenario 2: Poisson load ----------------------------------------------------------


@dataclass
class Workload:
    prompts: list[list[int]]
    offsets: list[float]  # arrival times from the start (s), ascending, first = 0
    new_tokens: int


@dataclass
class LoadResult:
    token_times: list[list[float]]  # per request: when each output token existed
    arrivals: list[float]
    extra: dict[str, Any] = field(default_factory=dict)

    def ttfts(self) -> list[float]:
        return [t[0] - a for t, a in zip(self.token_times, self.arrivals)]

    def itls(self) -> list[float]:
        return [b - a for t in self.token_times for a, b in zip(t, t[1:])]

    def throughput(self) -> float:
        makespan = max(t[-1] for t in self.token_times) - min(self.arrivals)
        return sum(len(t) for t in self.token_times) / makespan

    def makespan(self) -> float:
        return max(t[-1] for t in self.token_times) - min(self.arrivals)


def make_workload(s: Settings, vocab_size: int) -> Workload:
    rng = random.Random(SEED + 2)
    offsets, t = [], 0.0
    for i in range(s.load_requests):
        offsets.append(t)
        if i + 1 < s.load_requests:
            t += rng.expovariate(s.load_rate)
    lo, hi = s.load_prompt
    prompts = [random_ids(rng, vocab_size, rng.randint(lo, hi)) for _ in offsets]
    return Workload(prompts, offsets, s.load_new)


def _sleep_until(t: float) -> None:
    delay = t - now()
    if delay > 0:
        time.sleep(delay)


def run_mmntp_load(engine: Engine, w: Workload) -> LoadResult:
    """Add each request once its arrival time has passed; step while there is work."""
    start = now()
    arrivals = [start + o for o in w.offsets]
    stamps: dict[str, list[float]] = {}
    pending = deque(range(len(w.prompts)))
    steps = 0
    while pending or engine.has_unfinished():
        t = now()
        while pending and arrivals[pending[0]] <= t:
            i = pending.popleft()
            rid = f"load-{i}"
            stamps[rid] = []
            engine.add_request(
                Request(
                    rid, w.prompts[i], free_plan(w.new_tokens), GREEDY, arrival_time=arrivals[i]
                )
            )
        if not engine.has_unfinished():
            _sleep_until(arrivals[pending[0]])
            continue
        outputs = engine.step()
        steps += 1
        t = now()
        for out in outputs:
            stamps[out.request_id].extend([t] * len(out.new_token_ids))
    times = [stamps[f"load-{i}"] for i in range(len(w.prompts))]
    if any(len(t) != w.new_tokens for t in times):
        raise RuntimeError("mmntp: a load request did not produce exactly new_tokens tokens")
    extra = {"steps": steps, "preemptions": engine.stats.num_preemptions}
    return LoadResult(times, arrivals, extra)


def run_hf_load(hf, w: Workload, max_batch: int) -> LoadResult:
    """Batches of whatever has arrived when the previous one ends (FIFO, up to max_batch)."""
    start = now()
    arrivals = [start + o for o in w.offsets]
    times: list[list[float]] = [[] for _ in w.prompts]
    pending = deque(range(len(w.prompts)))
    batches = []
    while pending:
        if arrivals[pending[0]] > now():
            _sleep_until(arrivals[pending[0]])
        batch = []
        while pending and len(batch) < max_batch and arrivals[pending[0]] <= now():
            batch.append(pending.popleft())
        streamer = _StampStreamer()
        hf_generate(hf, [w.prompts[i] for i in batch], w.new_tokens, streamer)
        for i in batch:
            times[i] = list(streamer.stamps)
        batches.append(len(batch))
    extra = {"batches": len(batches), "mean_batch": sum(batches) / len(batches)}
    return LoadResult(times, arrivals, extra)


def ttft_alone(engine: Engine, prompt: list[int]) -> float:
    """TTFT of one request on an otherwise empty engine (then run it to the end)."""
    req = Request(_rid("idle"), prompt, free_plan(1), GREEDY)
    req.arrival_time = now()
    engine.add_request(req)
    while not req.output_ids:
        engine.step()
    ttft = now() - req.arrival_time
    while engine.has_unfinished():
        engine.step()
    return ttft


def idle_ttft(engine: Engine, pair: Pair, prompt_len: int, trials: int) -> float:
    """Median TTFT of one request alone on an empty engine (fresh prompts: no cache hits)."""
    rng = random.Random(SEED + 3)
    return median(
        ttft_alone(engine, random_ids(rng, pair.vocab_size, prompt_len)) for _ in range(trials)
    )


def ttfts_alone(model: Transformer, w: Workload) -> list[float]:
    """Each load prompt's TTFT alone on an empty engine (cache off)."""
    engine = Engine(model, EngineConfig(enable_prefix_caching=False))
    return [ttft_alone(engine, p) for p in w.prompts]


def max_ttft_lower_bound(offsets: list[float], alone: list[float]) -> float:
    """A floor under the largest TTFT any scheduler could give this arrival sequence, at
    this engine's prefill speed: for requests i..j (in arrival order), whichever of them
    gets its first token last gets it no earlier than arrival_i + the sum of their alone
    TTFTs (each needs its whole prefill first, and prefill already runs at matrix-product
    speed, so sharing steps does not make it faster), and it arrived by arrival_j.
    Decode work only raises the floor. With 32 requests the TTFT p99 is the largest."""
    best = 0.0
    for i in range(len(offsets)):
        work = 0.0
        for j in range(i, len(offsets)):
            work += alone[j]
            best = max(best, work - (offsets[j] - offsets[i]))
    return best


def hf_idle_ttft(pair: Pair, prompt_len: int, trials: int) -> float:
    """Median time of a max_new_tokens=1 generate (prefill + first token) for one prompt."""
    rng = random.Random(SEED + 3)
    prompts = [random_ids(rng, pair.vocab_size, prompt_len) for _ in range(trials)]
    return median(timed(lambda p=p: hf_generate(pair.hf, [p], 1))[0] for p in prompts)


def bench_load(pair: Pair, s: Settings) -> list[Row]:
    w = make_workload(s, pair.vocab_size)
    engine = Engine(pair.model, EngineConfig(kv_cache_bytes=s.load_kv_cache_bytes))
    progress(
        f"scenario 2: {s.load_requests} requests at {s.load_rate:g} req/s, "
        f"prompts {s.load_prompt[0]}..{s.load_prompt[1]}, {s.load_new} new tokens"
    )
    warm_up(pair, engine, s.load_prompt[1])
    progress("  mmntp engine")
    mm = run_mmntp_load(engine, w)
    progress(f"  transformers, padded batches of up to {s.load_max_batch}")
    hf = run_hf_load(pair.hf, w, s.load_max_batch)
    median_len = (s.load_prompt[0] + s.load_prompt[1]) // 2
    progress(f"  idle TTFT, {median_len}-token prompt")
    idle = idle_ttft(Engine(pair.model, EngineConfig()), pair, median_len, s.idle_trials)
    hf_idle = hf_idle_ttft(pair, median_len, s.idle_trials)
    progress("  each load prompt alone (its own idle TTFT)")
    alone = ttfts_alone(pair.model, w)
    slow = [t / a for t, a in zip(mm.ttfts(), alone)]
    floor = max_ttft_lower_bound(w.offsets, alone)
    common = {"requests": s.load_requests, "rate_per_s": s.load_rate}
    mm_p99 = percentile(mm.ttfts(), 99)
    ms = 1e3
    rows = [
        Row(
            "load_throughput",
            mm.throughput(),
            hf.throughput(),
            "tok/s",
            extra={
                **common,
                "mmntp_makespan_s": mm.makespan(),
                "baseline_makespan_s": hf.makespan(),
                # No engine finishes before the last request arrives (plus its own TTFT
                # alone), so at this arrival rate the throughput ratio is at most this.
                "ratio_bound_by_arrivals": hf.makespan() / (w.offsets[-1] + alone[-1]),
                **{f"mmntp_{k}": v for k, v in mm.extra.items()},
                **{f"baseline_{k}": v for k, v in hf.extra.items()},
                "target": ">= 3x",
                "target_met": mm.throughput() >= 3 * hf.throughput(),
            },
        )
    ]
    for name, q in (("ttft_p50", 50), ("ttft_p99", 99)):
        rows.append(
            Row(
                f"load_{name}",
                ms * percentile(mm.ttfts(), q),
                ms * percentile(hf.ttfts(), q),
                "ms",
                higher_is_better=False,
                extra=dict(common),
            )
        )
    rows[-1].extra.update(
        {
            "mmntp_idle_ttft_ms": ms * idle,
            "p99_over_idle": mm_p99 / idle,
            # The same prompt alone: a 512-token prompt is not slowed down by load merely
            # because it takes longer than the median-length idle request.
            "slowdown_p50": percentile(slow, 50),
            "slowdown_p99": percentile(slow, 99),
            # No scheduler could give this arrival sequence a smaller largest TTFT at
            # this prefill speed (max_ttft_lower_bound); over the idle TTFT, the least
            # p99_over_idle this workload allows on this machine.
            "ttft_max_lower_bound_ms": ms * floor,
            "lower_bound_over_idle": floor / idle,
            "target": "p99_over_idle <= 3",
            "target_met": mm_p99 / idle <= 3,
            "slowdown_target_met": percentile(slow, 99) <= 3,
        }
    )
    for name, q in (("itl_p50", 50), ("itl_p99", 99)):
        rows.append(
            Row(
                f"load_{name}",
                ms * percentile(mm.itls(), q),
                ms * percentile(hf.itls(), q),
                "ms",
                higher_is_better=False,
                extra=dict(common),
            )
        )
    rows.append(bench_saturated(pair, w, s))
    rows.append(
        Row(
            "idle_ttft",
            ms * idle,
            ms * hf_idle,
            "ms",
            higher_is_better=False,
            extra={"prompt_tokens": median_len, "trials": s.idle_trials},
        )
    )
    return rows


def bench_saturated(pair: Pair, w: Workload, s: Settings) -> Row:
    """The same requests all at once: each side's capacity. Throughput at any arrival rate
    is at most about this ratio (slower arrivals stretch both makespans alike)."""
    progress("  saturated: the same requests all arriving at once")
    burst = Workload(w.prompts, [0.0] * len(w.prompts), w.new_tokens)
    # A fresh engine: the load run's engine holds these prompts in its prefix cache.
    engine = Engine(pair.model, EngineConfig(kv_cache_bytes=s.load_kv_cache_bytes))
    mm = run_mmntp_load(engine, burst)
    hf = run_hf_load(pair.hf, burst, s.load_max_batch)
    return Row(
        "saturated_throughput",
        mm.throughput(),
        hf.throughput(),
        "tok/s",
        extra={
            "requests": s.load_requests,
            "mmntp_makespan_s": mm.makespan(),
            "baseline_makespan_s": hf.makespan(),
            "mmntp_ttft_p99_ms": 1e3 * percentile(mm.ttfts(), 99),
        },
    )


# -- scenario 3: prefix caching --------------------------------------------------------


def prefix_ttft(engine: Engine, pair: Pair, s: Settings, seed: int) -> list[float]:
    """Per trial: complete a request on a fresh prefix, then time a second one sharing it."""
    rng = random.Random(seed)
    tail = s.prefix_prompt - s.prefix_shared
    samples = []
    for _ in range(s.prefix_trials):
        shared = random_ids(rng, pair.vocab_size, s.prefix_shared)
        first = Request(
            _rid("pfx"), shared + random_ids(rng, pair.vocab_size, tail), free_plan(1), GREEDY
        )
        engine.run_to_completion([first])
        second = Request(
            _rid("pfx"), shared + random_ids(rng, pair.vocab_size, tail), free_plan(1), GREEDY
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


# -- driver ----------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    import transformers

    logging = transformers.logging
    before, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()  # save_pretrained's shard bar would clutter stderr
    try:
        yield
    finally:
        logging.set_verbosity(before)
        if bars:
            logging.enable_progress_bar()


def run_scenarios(scenarios: tuple[int, ...], s: Settings, workdir: Path) -> list[Row]:
    pairs: dict[str, Pair] = {}

    def pair(name: str) -> Pair:
        if name not in pairs:
            progress(f"building the {name} model pair (transformers -> safetensors -> mmntp)")
            pairs[name] = build_pair(name, s.models[name], workdir)
        return pairs[name]

    rows: list[Row] = []
    with _quiet_transformers(), torch.inference_mode():
        if 1 in scenarios:
            rows += [bench_decode(pair("tiny"), s), bench_decode(pair("50m"), s)]
        if 2 in scenarios:
            rows += bench_load(pair("tiny"), s)
        if 3 in scenarios:
            rows.append(bench_prefix(pair("tiny"), s))
    return rows


def run(args: argparse.Namespace) -> int:
    """Run the picked scenarios, print rows (table or JSON lines), write --out."""
    import json

    s = Settings.quick() if args.quick else Settings()
    progress(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="mmntp-bench-") as tmp:
        rows = run_scenarios(tuple(args.scenarios), s, Path(tmp))
    if args.json:
        for row in rows:
            print(json.dumps(row.to_dict()), flush=True)
    else:
        print(format_table(rows))
    meta = {
        "benchmark": "engine",
        "quick": bool(args.quick),
        "scenarios": list(args.scenarios),
        "settings": _settings_dict(s),
    }
    path = write_results(args.out, rows, meta)
    progress(f"wrote {path}")
    return 0


def _settings_dict(s: Settings) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmntp bench engine", description=__doc__)
    add_engine_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
