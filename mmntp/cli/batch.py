"""`mmntp batch ACTION`: durable batch jobs (mmntp.batch).

`run` executes a JSONL batch here: on a local model, on a server (`--server`), or on
Ray Data (`--backend ray`). Each action is one `add_*_parser(actions)` function in
`BATCH_ACTIONS`; submit, status, results and cancel (a server's batches) are in
batch_server.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial

from mmntp.cli.batch_server import SERVER_ACTIONS
from mmntp.cli.options import (
    API_KEY_ENV,
    add_connection_arguments,
    add_torch_threads,
    positive_int,
)

RUN_FAILED = 1  # stopped by a failure that is not a request's: rerun to resume


def add_batch_parser(sub) -> None:
    batch = sub.add_parser("batch", help="durable batch jobs: JSONL requests in, results out")
    actions = batch.add_subparsers(dest="batch_command", metavar="ACTION")
    for add in BATCH_ACTIONS:
        add(actions)
    batch.set_defaults(func=lambda args: _usage(batch))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def add_run_parser(actions) -> None:
    run = actions.add_parser(
        "run",
        help="run a batch file here (local model, --server or Ray); rerun to resume",
        description='Each line of IN.jsonl is {"custom_id": ..., "request": {...}} with '
        "generate's fields; DIR/results.jsonl gets one line per custom_id. Killed at any "
        "moment, the same command resumes; a finished batch reruns as a no-op.",
    )
    run.add_argument("input", metavar="IN.jsonl")
    run.add_argument("--out", required=True, metavar="DIR", help="the batch folder")
    run.add_argument(
        "--model",
        help="model or service folder (default: the bundled service); with --server, the "
        "served model's name",
    )
    run.add_argument("--server", metavar="HOST:PORT", help="send the requests to this mmntp server")
    run.add_argument(
        "--backend",
        choices=["local", "ray"],
        default="local",
        help="local: this process (or --server); ray: Ray Data actors (pip install 'mmntp[ray]')",
    )
    run.add_argument(
        "--workers",
        type=positive_int,
        default=2,
        metavar="N",
        help="ray: actors, one pipeline each (default 2)",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="ray: the cluster to join (default: $RAY_ADDRESS, else a local Ray runtime)",
    )
    run.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="requests in flight (default: local, the engine's rows; --server, 16)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_connection_arguments(run, timeout=300.0)
    add_torch_threads(run)
    run.set_defaults(func=cmd_run)


BATCH_ACTIONS = [add_run_parser, *SERVER_ACTIONS]


def cmd_run(args: argparse.Namespace) -> int:
    from mmntp.batch.runner import run_batch

    if args.backend == "ray":
        if args.server:
            raise ValueError("--server and --backend ray do not go together")
        from mmntp.batch.ray_backend import run_batch_ray

        run = partial(
            run_batch_ray,
            args.input,
            args.out,
            args.model,
            workers=args.workers,
            address=args.ray_address,
            progress=not args.no_progress,
            torch_threads=args.torch_threads,
        )
    else:
        make = _remote_backend(args) if args.server else _local_backend(args)
        run = partial(run_batch, args.input, args.out, make, progress=not args.no_progress)
    try:
        report = run()
    except Exception as err:
        if isinstance(err, ValueError | FileNotFoundError):
            raise  # a refused batch or a bad option: exit 2 with one line (cli main)
        print(
            f"mmntp batch run: stopped: {type(err).__name__}: {err}; "
            "rerun the same command to resume",
            file=sys.stderr,
        )
        return RUN_FAILED
    c = report.counts
    what = "already complete" if report.already_complete else "complete"
    print(f"batch {what}: {c.total} requests, {c.done} ok, {c.error} errors -> {report.results}")
    return 0


def _local_backend(args):
    def make():
        from mmntp.batch.runner import LocalBackend
        from mmntp.generation import Pipeline

        backend = LocalBackend(Pipeline.from_pretrained(args.model))
        if args.concurrency:
            backend.max_requests = args.concurrency
        return backend

    return make


def _remote_backend(args):
    def make():
        from mmntp.batch.runner import RemoteBackend
        from mmntp.client import AsyncClient

        client = AsyncClient(
            args.server,
            api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
            tls_ca=args.tls_ca,
            timeout=args.timeout,
            model=args.model or "",
        )
        return RemoteBackend(client, args.concurrency)

    return make
