"""`mmntp batch submit|status|results|cancel --server H:P`: batch jobs kept by a server.

The server runs them (BatchService, docs/operations.md "Batch jobs"); these commands
only send, ask and fetch. `results --out DIR` writes the local runner's layout:
`DIR/results.jsonl` and the files it names under `DIR/files/`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmntp.cli.options import add_connection_arguments, make_client


def _server_action(actions, name: str, help: str, func) -> argparse.ArgumentParser:
    parser = actions.add_parser(name, help=help)
    parser.add_argument("--server", required=True, metavar="HOST:PORT")
    add_connection_arguments(parser, timeout=60.0)
    parser.set_defaults(func=lambda args: _call(name, func, args))
    return parser


def add_submit_parser(actions) -> None:
    p = _server_action(actions, "submit", "send a batch file to a server; prints its id", submit)
    p.add_argument("input", metavar="IN.jsonl")
    p.add_argument(
        "--name", default="", help="idempotency key: submitting the same name again is a no-op"
    )


def add_status_parser(actions) -> None:
    p = _server_action(
        actions, "status", "a server batch's status (all batches without ID)", status
    )
    p.add_argument("id", nargs="?", metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON")


def add_results_parser(actions) -> None:
    p = _server_action(actions, "results", "fetch a server batch's results into DIR", results)
    p.add_argument("id", metavar="ID")
    p.add_argument("--out", required=True, metavar="DIR")


def add_cancel_parser(actions) -> None:
    p = _server_action(actions, "cancel", "cancel a server batch", cancel)
    p.add_argument("id", metavar="ID")


SERVER_ACTIONS = [add_submit_parser, add_status_parser, add_results_parser, add_cancel_parser]


def _call(name: str, func, args: argparse.Namespace) -> int:
    from mmntp.client import ClientError

    try:
        with make_client(args) as client:
            return func(client, args)
    except ClientError as err:
        print(f"mmntp batch {name}: error: {err.code.name}: {err.details}", file=sys.stderr)
        return 1


def submit(client, args) -> int:
    job = client.submit_batch(args.input, name=args.name)
    print(job.id)
    return 0


def status(client, args) -> int:
    jobs = [client.get_batch(args.id)] if args.id else client.list_batches()
    if args.json:
        print(json.dumps([vars(j) for j in jobs] if not args.id else vars(jobs[0]), indent=2))
        return 0
    for job in jobs:
        cancelled = f", {job.cancelled} cancelled" if job.cancelled else ""
        error = f" ({job.error})" if job.error else ""
        print(
            f"{job.id}  {job.status}{error}  {job.done + job.failed + job.cancelled}/{job.total}"
            f" ({job.done} ok, {job.failed} errors{cancelled})"
            + (f"  {job.name}" if job.name else "")
        )
    return 0


def results(client, args) -> int:
    """Write every result the server has so far; says how many and whether it ended."""
    from mmntp.batch.responses import save_media, write_atomically
    from mmntp.batch.results import RESULTS_FILE

    out = Path(args.out)
    lines = []
    for result in client.batch_results(args.id):
        for path, data in result.files.items():
            save_media(out, _inside(path), data)
        lines.append(result.line + "\n")
    write_atomically(out / RESULTS_FILE, "".join(lines).encode())
    job = client.get_batch(args.id)
    state = "all results" if job.ended else f"batch {job.status}: results so far"
    print(f"{state}: {len(lines)} of {job.total} -> {out / RESULTS_FILE}")
    return 0


def _inside(path: str) -> str:
    """A server-named file path, kept inside the output folder."""
    parts = Path(path).parts
    if Path(path).is_absolute() or ".." in parts or not parts:
        raise ValueError(f"the server named a file outside the batch folder: {path!r}")
    return path


def cancel(client, args) -> int:
    job = client.cancel_batch(args.id)
    print(
        f"{job.id}  {job.status}  ({job.done} ok, {job.failed} errors, {job.cancelled} cancelled)"
    )
    return 0
