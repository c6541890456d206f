"""The `mmntp` command line: `main()` and the top-level parser; one module per group.

generate (generate.py) | batch (batch.py) | serve, health (serve.py) | bench (bench.py) | eval (eval.py) |
train (train.py) | inspect, import-hf (inspect.py) | train-tokenizer, tokenize,
detokenize (tokenizer.py); shared options in options.py, output formats in writers.py.
Every command takes --torch-threads (options.py says why its default is small).
"""

from __future__ import annotations

import argparse
import sys

from mmntp import __version__
from mmntp.cli.batch import add_batch_parser
from mmntp.cli.bench import add_bench_parsers
from mmntp.cli.eval import add_eval_parser
from mmntp.cli.generate import add_generate_parser
from mmntp.cli.inspect import add_inspect_parsers
from mmntp.cli.options import set_torch_threads
from mmntp.cli.serve import add_health_parser, add_serve_parser
from mmntp.cli.tokenizer import add_tokenizer_parsers
from mmntp.cli.train import add_train_parser

INTERRUPTED = 130  # 128 + SIGINT, as shells report it


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not getattr(args, "own_threads", False):
        set_torch_threads(getattr(args, "torch_threads", None))
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"mmntp {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mmntp {args.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmntp", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"mmntp {__version__}")
    sub = parser.add_subparsers(dest="command")
    add_generate_parser(sub)
    add_batch_parser(sub)
    add_serve_parser(sub)
    add_health_parser(sub)
    add_bench_parsers(sub)
    add_eval_parser(sub)
    add_inspect_parsers(sub)
    add_train_parser(sub)
    add_tokenizer_parsers(sub)
    return parser
