"""Scenario 1 of `mmntp bench engine`: batch-1 greedy decode tokens/s against transformers."""

from __future__ import annotations

import random

import torch

from mmntp.bench.common import Row, median, progress, timed
from mmntp.bench.engine_pair import (
    SEED,
    Pair,
    Settings,
    hf_generate,
    mmntp_generate,
    random_ids,
    request_id,
    warm_up,
)
from mmntp.engine import Engine, EngineConfig
from mmntp.model.transformer import Transformer


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
                lambda e=engine: mmntp_generate(e, prompt, s.decode_new, request_id("dec"))
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
    if pair.name == s.reference:
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
