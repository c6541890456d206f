"""The client side of the `mmntp` command line: `health`, `bench serve`, `generate --server`.

`mmntp generate --server HOST:PORT ...` takes the local form's options and prints the same
output (forecast CSV, tokens JSON, streamed text), produced by a running server instead of
a local model. Importing this module is cheap: grpc, torch and the SDK load on first use.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

API_KEY_ENV = "MMNTP_API_KEY"
DEFAULT_SERVE_OUT = "bench-results/serve.json"
BENCH_MODALITIES = ("text", "timeseries")


def add_connection_arguments(parser: argparse.ArgumentParser, timeout: float | None) -> None:
    """--api-key, --tls-ca and --timeout: how to reach and authenticate to a server."""
    parser.add_argument(
        "--api-key", help=f"API key sent as 'authorization: Bearer KEY' (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--tls-ca", metavar="FILE", help="use TLS, trusting this CA (PEM)")
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        default=timeout,
        metavar="S",
        help=f"deadline per request in seconds (default {timeout})",
    )


def add_remote_generate_arguments(gen: argparse.ArgumentParser) -> None:
    """The options `generate` needs to run against a server (--server switches it on)."""
    gen.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="generate on this mmntp server instead of a local model (--model names the "
        "served model)",
    )
    add_connection_arguments(gen, timeout=300.0)


def add_health_parser(subparsers) -> argparse.ArgumentParser:
    """`mmntp health --server HOST:PORT`: print the server's health; exit 0 if SERVING."""
    parser = subparsers.add_parser(
        "health", help="check a server's health (exit 0 if SERVING, else 1)"
    )
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--service", default="", help="service to check (default: the whole server)"
    )
    add_connection_arguments(parser, timeout=5.0)
    parser.set_defaults(func=run_health)
    return parser


def add_bench_serve_parser(bench_subparsers) -> argparse.ArgumentParser:
    """Add `serve` to `mmntp bench` (its subparsers action, or the `bench` parser itself)."""
    if isinstance(bench_subparsers, argparse.ArgumentParser):
        bench_subparsers = _subparsers_of(bench_subparsers)
    parser = bench_subparsers.add_parser(
        "serve", help="latency and throughput of a running server under load"
    )
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--rate",
        type=_positive_float,
        help="Poisson arrivals per second, 'inf' = all at once (default 4)",
    )
    load.add_argument(
        "--concurrency", type=_positive_int, help="keep this many requests in flight instead"
    )
    parser.add_argument("--requests", type=_positive_int, default=32, help="total (default 32)")
    parser.add_argument(
        "--modalities",
        type=_modalities,
        default=BENCH_MODALITIES,
        help=f"comma-separated, requests alternate (default {','.join(BENCH_MODALITIES)})",
    )
    parser.add_argument("--max-tokens", type=_positive_int, default=32, help="text (default 32)")
    parser.add_argument(
        "--horizon", type=_positive_int, default=12, help="forecast steps (default 12)"
    )
    parser.add_argument(
        "--baseline-requests",
        type=int,
        default=2,
        metavar="N",
        help="per modality, sent one at a time before the load: the idle baseline (default 2)",
    )
    parser.add_argument("--seed", type=int, default=0, help="arrivals and sampling seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--out", default=DEFAULT_SERVE_OUT, help=f"write JSON here (default {DEFAULT_SERVE_OUT})"
    )
    add_connection_arguments(parser, timeout=60.0)
    parser.set_defaults(func=run_bench_serve)
    return parser


def _subparsers_of(parser: argparse.ArgumentParser):
    for action in parser._actions:  # argparse keeps no public handle on its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise ValueError(f"{parser.prog} has no subcommands")


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _modalities(text: str) -> tuple[str, ...]:
    picked = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in picked if m not in BENCH_MODALITIES]
    if bad or not picked:
        raise argparse.ArgumentTypeError(
            f"--modalities must pick from {','.join(BENCH_MODALITIES)}, got {text!r}"
        )
    return picked


def _client(args: argparse.Namespace):
    from mmntp.client import Client

    return Client(
        args.server,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        tls_ca=args.tls_ca,
        timeout=args.timeout,
        model=getattr(args, "model", None) or "",
    )


# -- health ------------------------------------------------------------------------------


def run_health(args: argparse.Namespace) -> int:
    from mmntp.client import ClientError

    try:
        with _client(args) as client:
            status = client.health(args.service)
    except ClientError as err:
        print(f"mmntp health: error: {err.code.name}: {err.details}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


# -- bench serve -------------------------------------------------------------------------


def run_bench_serve(args: argparse.Namespace) -> int:
    from mmntp.bench.serve import run

    return run(args)


# -- generate --server ------------------------------------------------------------------


def run_remote_generate(args: argparse.Namespace) -> int:
    """`mmntp generate --server ...`: the local form's options and output, on a server."""
    from mmntp.cli import _infer_modality
    from mmntp.client import ClientError

    if not args.server:
        raise ValueError("--server HOST:PORT is required")
    modality = args.modality or _infer_modality(args)
    try:
        with _client(args) as client:
            if modality == "timeseries":
                return _remote_forecast(client, args)
            if modality == "image":
                return _remote_image(client, args)
            if modality == "audio":
                return _remote_audio(client, args)
            if modality == "tokens":
                return _remote_tokens(client, args)
            return _remote_text(client, args)
    except ClientError as err:
        print(f"mmntp generate: error: {err.code.name}: {err.details}", file=sys.stderr)
        return 2


def _remote_tokens(client, args: argparse.Namespace) -> int:
    from mmntp.api import TokenIdsPart, TokensOutput
    from mmntp.cli import _emit, prompt_ids, sampling_from_args
    from mmntp.client import TokensChunk

    ids = prompt_ids(args)
    sampling = sampling_from_args(args)
    out_ids: list[int] = []
    logprobs: list[float] = []
    for chunk in client.generate(TokenIdsPart(ids), TokensOutput(args.max_tokens), sampling):
        if isinstance(chunk, TokensChunk):
            out_ids.extend(chunk.ids)
            logprobs.extend(chunk.logprobs)
    payload: dict = {"token_ids": out_ids}
    if args.logprobs:
        payload["logprobs"] = logprobs
    if args.json:
        _emit(json.dumps(payload), args.output)
    else:
        _emit(" ".join(map(str, out_ids)), args.output)
    return 0


def _remote_text(client, args: argparse.Namespace) -> int:
    from mmntp.api import TextOutput
    from mmntp.cli import _emit, sampling_from_args
    from mmntp.client import Final, TextChunk

    if args.prompt is None:
        raise ValueError("--prompt is required for text generation")
    if args.json and (args.logprobs):
        # The API streams text as deltas only; ask for raw ids with --modality tokens.
        raise ValueError("--logprobs with text output is not available with --server")
    sampling = sampling_from_args(args)
    chunks = client.generate(args.prompt, TextOutput(max_tokens=args.max_tokens), sampling)
    if args.json or args.output:
        parts: list[str] = []
        finish = "unspecified"
        for chunk in chunks:
            if isinstance(chunk, TextChunk):
                parts.append(chunk.text)
            elif isinstance(chunk, Final):
                finish = chunk.finish_reason
        text = "".join(parts)
        payload = {"text": text, "finish_reason": finish}
        _emit(json.dumps(payload) if args.json else text, args.output)
        return 0
    for chunk in chunks:
        if isinstance(chunk, TextChunk):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        elif isinstance(chunk, Final):
            sys.stdout.write("\n")
    return 0


def _remote_forecast(client, args: argparse.Namespace) -> int:
    from mmntp.cli import forecast_request
    from mmntp.client import save_forecast_csv

    values, sampling = forecast_request(args)
    result = client.forecast(values, args.horizon, num_samples=args.num_samples, sampling=sampling)
    if args.output:
        save_forecast_csv(result, args.output)
        print(f"wrote {args.horizon}-step forecast to {args.output}", file=sys.stderr)
    if args.json or not args.output:
        payload = {"median": result.median.tolist()}
        payload.update({f"q{q:g}": v.tolist() for q, v in result.quantiles.items()})
        print(json.dumps(payload))
    return 0


def _remote_audio(client, args: argparse.Namespace) -> int:
    from mmntp.cli import audio_request
    from mmntp.client import AudioChunk, save_wav

    output, sampling = audio_request(args)
    chunks = []
    for chunk in client.generate(args.prompt, output, sampling):
        if isinstance(chunk, AudioChunk):
            end = (chunk.first_sample + len(chunk.samples)) / chunk.sample_rate
            print(f"audio {end:.2f} s", file=sys.stderr)
            chunks.append(chunk)
    save_wav(chunks, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _remote_image(client, args: argparse.Namespace) -> int:
    from mmntp.cli import image_request
    from mmntp.client import ImageChunk, save_png

    output, sampling = image_request(args)
    chunks = []
    for chunk in client.generate(args.prompt, output, sampling):
        if isinstance(chunk, ImageChunk):
            print(f"rows {chunk.rows_done}/{chunk.total_rows}", file=sys.stderr)
            chunks.append(chunk)
    save_png(chunks, args.output)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
