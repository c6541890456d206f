"""Shared argparse helpers: numbers, the connection options, torch threads, the SDK client.

Threads: on a shared 2-core machine torch's default (every core, busy-waiting OpenMP
threads) collapses when another process competes: 1 s of audio took 35 s with all threads
and 2 s with one, with identical output. So every command takes `--torch-threads N` and,
unset, uses one thread on a machine of two cores or fewer, else half the cores (at most 4).
An explicit OMP_NUM_THREADS in the environment is respected when the flag is unset.
"""

from __future__ import annotations

import argparse
import os
import sys

API_KEY_ENV = "MMNTP_API_KEY"


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def default_torch_threads(cores: int | None = None) -> int:
    """1 on <= 2 cores (a shared small machine collapses with more), else cores // 2, <= 4."""
    cores = cores or os.cpu_count() or 1
    return 1 if cores <= 2 else min(4, cores // 2)


def add_torch_threads(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument(
        "--torch-threads",
        type=non_negative_int,
        metavar="N",
        help=help
        or f"torch intra-op threads (default {default_torch_threads()} here: 1 on <= 2 cores, "
        "else half the cores up to 4; 0 = torch's own choice)",
    )


def set_torch_threads(threads: int | None) -> int | None:
    """Apply a thread count (None: the default unless OMP_NUM_THREADS is set; 0: torch's).

    When torch is not imported yet the environment is set instead, so a command that
    never needs torch (health, bench serve) does not pay for importing it.
    """
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        threads = default_torch_threads()
    if threads == 0:
        return None
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.environ["MKL_NUM_THREADS"] = str(threads)
    return threads


def add_connection_arguments(parser: argparse.ArgumentParser, timeout: float | None) -> None:
    """--api-key, --tls-ca and --timeout: how to reach and authenticate to a server."""
    parser.add_argument(
        "--api-key", help=f"API key sent as 'authorization: Bearer KEY' (default: ${API_KEY_ENV})"
    )
    parser.add_argument("--tls-ca", metavar="FILE", help="use TLS, trusting this CA (PEM)")
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=timeout,
        metavar="S",
        help=f"deadline per request in seconds (default {timeout})",
    )


def make_client(args: argparse.Namespace):
    """The SDK Client for --server / --api-key / --tls-ca / --timeout (and --model)."""
    from mmntp.client import Client

    return Client(
        args.server,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        tls_ca=args.tls_ca,
        timeout=args.timeout,
        model=getattr(args, "model", None) or "",
    )


def write_json_report(path: str | None, report: dict) -> None:
    """Write a report (indented JSON) to `path`, creating its folder; nothing when None."""
    if path:
        import json
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
