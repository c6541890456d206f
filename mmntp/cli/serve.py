"""`mmntp serve` (a service folder over gRPC, and HTTP) and `mmntp health` (ask a running server)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mmntp.cli.options import (
    add_connection_arguments,
    add_torch_threads,
    make_client,
    set_torch_threads,
)


def add_serve_parser(sub) -> None:
    srv = sub.add_parser(
        "serve", help="serve a service folder over gRPC (and HTTP with --http-port)"
    )
    srv.add_argument("service", nargs="?", help="service or model folder (default: bundled)")
    srv.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    srv.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    srv.add_argument(
        "--http-port",
        type=int,
        help="also serve the HTTP API and playground on this port (0 picks a free one; "
        "service.json server.http_port)",
    )
    srv.add_argument("--api-keys-file", help="one API key per line (else $MMNTP_API_KEYS)")
    srv.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve without API keys on a non-loopback --host, or with a blank key set "
        "(otherwise refused)",
    )
    srv.add_argument(
        "--key-policies",
        metavar="FILE",
        help="JSON per-key priorities and quotas (docs/operations.md; else $MMNTP_KEY_POLICIES)",
    )
    srv.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    srv.add_argument("--tls-key", help="PEM private key of --tls-cert")
    srv.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    srv.add_argument("--grace", type=float, help="seconds in-flight calls get after SIGTERM")
    srv.add_argument("--no-warmup", action="store_true", help="report SERVING without warm-up")
    srv.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where batch jobs are kept (service.json server.state_dir; default "
        "$XDG_STATE_HOME/mmntp/<service name>, i.e. ~/.local/state/mmntp/<name>)",
    )
    add_torch_threads(
        srv, "torch intra-op threads (service.json server.torch_threads, default 1; 0 = torch's)"
    )
    srv.set_defaults(func=cmd_serve, own_threads=True)


def cmd_serve(args) -> int:
    """Exit 0 after SIGTERM/SIGINT (also during start-up); 1 with one line when the server
    cannot start (busy port, TLS, model load, warm-up) or its engine dies; 2 for a bad
    setting (e.g. a blank key set without --allow-unauthenticated)."""
    import asyncio
    import logging

    from mmntp.serve.auth import load_api_keys
    from mmntp.serve.quotas import AdmissionConfig
    from mmntp.serve.server import ServeError, server_config_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    config = server_config_for(
        args.service,
        host=args.host,
        port=args.port,
        http_port=args.http_port,
        grace_seconds=args.grace,
        warmup=False if args.no_warmup else None,
        torch_threads=args.torch_threads,
        allow_unauthenticated=True if args.allow_unauthenticated else None,
        state_dir=args.state_dir,
    )
    set_torch_threads(config.torch_threads or 0)
    keys = load_api_keys(args.api_keys_file, allow_empty=config.allow_unauthenticated)
    admission = AdmissionConfig.load(args.key_policies) if args.key_policies else None
    try:
        asyncio.run(_serve(args, config, keys, admission))
    except ServeError as err:  # a busy port, a bad certificate, a broken model: one line
        print(f"mmntp serve: error: {err}", file=sys.stderr)
        return 1
    return 0


def default_state_dir(service_name: str) -> Path:
    """$XDG_STATE_HOME/mmntp/<service name> (XDG's default: ~/.local/state)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "mmntp" / service_name


async def _serve(args, config, keys, admission) -> None:
    import asyncio
    import dataclasses
    import logging

    from mmntp.generation import Pipeline
    from mmntp.serve.server import (
        Interrupted,
        Server,
        TlsFiles,
        serve_until_signal,
        stop_on_signals,
        unless_stopped,
    )

    stop = stop_on_signals()  # from here on SIGTERM stops cleanly, loading included
    tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key)) if args.tls_cert else None
    try:
        pipe = await unless_stopped(stop, asyncio.to_thread(Pipeline.from_pretrained, args.service))
    except Interrupted:
        logging.getLogger("mmntp.serve").info("signal received while loading; stopped")
        return
    if config.state_dir is None:
        config = dataclasses.replace(config, state_dir=str(default_state_dir(pipe.name)))
    server = Server(pipe, config, keys, tls, args.metrics_port, admission)
    await serve_until_signal(server, stop)


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
    add_torch_threads(parser)
    parser.set_defaults(func=cmd_health)
    return parser


def cmd_health(args: argparse.Namespace) -> int:
    from mmntp.client import ClientError

    try:
        with make_client(args) as client:
            status = client.health(args.service)
    except ClientError as err:
        print(f"mmntp health: error: {err.code.name}: {err.details}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1
