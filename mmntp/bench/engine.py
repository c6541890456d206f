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

The scenarios live in engine_decode, engine_load and engine_prefix; the model sizes, the
weight pair and both generators in engine_pair; this module picks and runs them, prints
the rows and writes --out.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mmntp.bench import add_engine_arguments
from mmntp.bench.common import Row, progress, report_rows
from mmntp.bench.engine_decode import bench_decode
from mmntp.bench.engine_load import bench_load
from mmntp.bench.engine_pair import Pair, Settings, build_pair
from mmntp.bench.engine_prefix import bench_prefix


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
            rows += [bench_decode(pair(name), s) for name in s.models]
        if 2 in scenarios:
            rows += bench_load(pair(s.reference), s)
        if 3 in scenarios:
            rows.append(bench_prefix(pair(s.reference), s))
    return rows


def run(args: argparse.Namespace) -> int:
    """Run the picked scenarios, print rows (table or JSON lines), write --out."""

    s = Settings.quick() if args.quick else Settings()
    progress(f"torch threads: {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="mmntp-bench-") as tmp:
        rows = run_scenarios(tuple(args.scenarios), s, Path(tmp))
    meta = {
        "benchmark": "engine",
        "quick": bool(args.quick),
        "scenarios": list(args.scenarios),
        "settings": _settings_dict(s),
    }
    report_rows(rows, meta, args.out, args.json)
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
