"""Benchmarks (`mmntp bench ...`): they print figures and write them to a file, never assert.

Importing this package is cheap (no torch): the CLI wires `add_bench_parser` into its
subcommands and each benchmark module is imported only when it runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

DEFAULT_ENGINE_OUT = "bench-results/engine.json"
ENGINE_SCENARIOS = (1, 2, 3)


def parse_scenarios(text: str) -> tuple[int, ...]:
    """'1,3' -> (1, 3); an unknown or malformed number is an argparse error naming it."""
    try:
        picked = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--scenarios must be comma-separated numbers, got {text!r}"
        ) from None
    bad = [n for n in picked if n not in ENGINE_SCENARIOS]
    if bad or not picked:
        raise argparse.ArgumentTypeError(
            f"--scenarios must pick from {','.join(map(str, ENGINE_SCENARIOS))}, got {text!r}"
        )
    return tuple(picked)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per scenario line")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and few tokens (smoke test, seconds)"
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_ENGINE_OUT,
        help=f"write every row plus machine info here as JSON (default {DEFAULT_ENGINE_OUT})",
    )
    parser.add_argument(
        "--scenarios",
        type=parse_scenarios,
        default=ENGINE_SCENARIOS,
        help="which scenarios: 1 decode, 2 load, 3 prefix caching (default 1,2,3)",
    )


def add_bench_parser(
    subparsers,
    more: Sequence[Callable[[object], object]] = (),
    common: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """Add `bench` (with `bench engine`) to a CLI's subparsers; each sets func -> exit code.

    `more` are called with bench's subparsers (the CLI adds `bench serve` so); `common`
    with every benchmark's parser (the CLI's shared options)."""
    bench = subparsers.add_parser("bench", help="benchmarks against a reference implementation")
    bench.set_defaults(func=lambda args: bench.print_help() or 2)
    kinds = bench.add_subparsers(dest="bench_command")
    engine = kinds.add_parser(
        "engine", help="mmntp's Engine vs transformers on the same weights (decode, load, prefix)"
    )
    add_engine_arguments(engine)
    engine.set_defaults(func=_run_engine)
    for add in more:
        add(kinds)
    if common is not None:
        for parser in kinds.choices.values():
            common(parser)
    return bench


def _run_engine(args: argparse.Namespace) -> int:
    from mmntp.bench.engine import run

    return run(args)
