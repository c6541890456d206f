"""`mmntp bench engine` (mmntp/bench registers it), `mmntp bench serve` and `mmntp bench
batch` (registered here)."""

from __future__ import annotations

import argparse

from mmntp.cli.options import (
    add_connection_arguments,
    add_torch_threads,
    positive_float,
    positive_int,
)

DEFAULT_SERVE_OUT = "bench-results/serve.json"
DEFAULT_BATCH_OUT = "bench-results/batch.json"
BATCH_MODALITIES = ("timeseries", "image")
BENCH_MODALITIES = ("text", "timeseries")


def add_bench_parsers(sub) -> None:
    from mmntp.bench import add_bench_parser

    add_bench_parser(
        sub, more=(add_bench_serve_parser, add_bench_batch_parser), common=add_torch_threads
    )


def add_bench_serve_parser(bench_subparsers) -> argparse.ArgumentParser:
    """Add `serve` to `mmntp bench`'s subparsers."""
    parser = bench_subparsers.add_parser(
        "serve", help="latency and throughput of a running server under load"
    )
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--rate",
        type=positive_float,
        help="Poisson arrivals per second, 'inf' = all at once (default 4)",
    )
    load.add_argument(
        "--concurrency", type=positive_int, help="keep this many requests in flight instead"
    )
    parser.add_argument("--requests", type=positive_int, default=32, help="total (default 32)")
    parser.add_argument(
        "--modalities",
        type=_modalities,
        default=BENCH_MODALITIES,
        help=f"comma-separated, requests alternate (default {','.join(BENCH_MODALITIES)})",
    )
    parser.add_argument("--max-tokens", type=positive_int, default=32, help="text (default 32)")
    parser.add_argument(
        "--horizon", type=positive_int, default=12, help="forecast steps (default 12)"
    )
    parser.add_argument(
        "--baseline-requests",
        type=int,
        default=2,
        metavar="N",
        help="per modality, sent one at a time before the load: the idle baseline (default 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="arrivals and sampling seed")
    parser.add_argument(
        "--fairness",
        action="store_true",
        help="the fairness scenario: key A (--flood-api-key) floods with the jobs above, key "
        "B (--api-key) sends --requests small text requests one at a time; B's p50/p99 "
        "against its idle baseline",
    )
    parser.add_argument("--flood-api-key", metavar="KEY", help="--fairness: key A, the flood")
    parser.add_argument(
        "--flood-concurrency",
        type=positive_int,
        default=32,
        help="--fairness: key A's requests in flight (default 32)",
    )
    parser.add_argument(
        "--flood-in-process",
        action="store_true",
        help="--fairness: run key A's flood on B's event loop instead of a process of its "
        "own (B's latency then includes client-side work on A's streams)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--out", default=DEFAULT_SERVE_OUT, help=f"write JSON here (default {DEFAULT_SERVE_OUT})"
    )
    add_connection_arguments(parser, timeout=60.0)
    parser.set_defaults(func=cmd_bench_serve)
    return parser


def add_bench_batch_parser(bench_subparsers) -> argparse.ArgumentParser:
    """Add `batch` to `mmntp bench`'s subparsers."""
    parser = bench_subparsers.add_parser(
        "batch", help="mmntp batch run's throughput against the same requests one at a time"
    )
    parser.add_argument("--model", help="model or service folder (default: the bundled service)")
    parser.add_argument(
        "--forecasts", type=positive_int, default=24, help="forecast requests (default 24)"
    )
    parser.add_argument("--images", type=positive_int, default=24, help="images (default 24)")
    parser.add_argument(
        "--modalities",
        type=lambda text: _pick(text, BATCH_MODALITIES),
        default=BATCH_MODALITIES,
        help=f"comma-separated (default {','.join(BATCH_MODALITIES)})",
    )
    parser.add_argument(
        "--probes",
        type=positive_int,
        default=60,
        help="interactive requests per phase for the server-batch rows (default 60)",
    )
    parser.add_argument(
        "--no-interactive",
        action="store_true",
        help="skip the rows of interactive latency with a server batch running",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per row")
    parser.add_argument(
        "--out", default=DEFAULT_BATCH_OUT, help=f"write JSON here (default {DEFAULT_BATCH_OUT})"
    )
    parser.set_defaults(func=cmd_bench_batch)
    return parser


def cmd_bench_batch(args: argparse.Namespace) -> int:
    from mmntp.bench.batch import run

    return run(args)


def _modalities(text: str) -> tuple[str, ...]:
    return _pick(text, BENCH_MODALITIES)


def _pick(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    picked = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in picked if m not in allowed]
    if bad or not picked:
        raise argparse.ArgumentTypeError(
            f"--modalities must pick from {','.join(allowed)}, got {text!r}"
        )
    return picked


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from mmntp.bench.serve import run

    return run(args)
