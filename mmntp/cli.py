"""The `mmntp` command line: generate | serve | health | bench | eval | inspect | train | import-hf."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmntp import __version__
from mmntp.bench import add_bench_parser
from mmntp.remote_cli import (
    add_bench_serve_parser,
    add_health_parser,
    add_remote_generate_arguments,
    run_remote_generate,
)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"mmntp {args.command}: error: {message}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmntp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mmntp {__version__}")
    sub = parser.add_subparsers(dest="command")

    gen = sub.add_parser("generate", help="generate text, tokens or a forecast")
    gen.add_argument("--model", help="model or service folder (default: the bundled service)")
    gen.add_argument("--modality", choices=["text", "tokens", "timeseries"])
    gen.add_argument("--prompt", help="text prompt")
    gen.add_argument("--prompt-ids", help="comma-separated raw token ids")
    gen.add_argument(
        "--context", help="time-series history: CSV (one column or timestamp,value) or JSON"
    )
    gen.add_argument("--horizon", type=int, default=24, help="forecast steps")
    gen.add_argument("--num-samples", type=int, default=20, help="forecast sample paths")
    gen.add_argument("--max-tokens", type=int, default=128)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--logprobs", action="store_true", help="include log-probabilities")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.add_argument("-o", "--output", help="write the result here (forecast: CSV)")
    gen.add_argument("--plot", help="forecast: also draw history, median and 10-90%% band (PNG)")
    add_remote_generate_arguments(gen)
    gen.set_defaults(func=cmd_generate)

    add_serve_parser(sub)
    add_health_parser(sub)
    add_bench_serve_parser(add_bench_parser(sub))

    add_eval_parser(sub)

    ins = sub.add_parser("inspect", help="show a model folder's config, size and vocabulary")
    ins.add_argument("dir")
    ins.add_argument("--json", action="store_true")
    ins.set_defaults(func=cmd_inspect)

    tr = sub.add_parser("train", help="train a model from a TOML recipe")
    tr.add_argument("recipe")
    tr.add_argument(
        "--resume",
        default="auto",
        help="'auto' (newest checkpoint), 'none', or a checkpoint folder",
    )
    tr.add_argument("--max-steps", type=int, help="override optim.max_steps")
    tr.add_argument("--out-dir", help="override out_dir")
    tr.add_argument("--export", help="override train.export (final model folder)")
    tr.set_defaults(func=cmd_train)

    imp = sub.add_parser("import-hf", help="convert a Hugging Face Llama-family folder")
    imp.add_argument("src")
    imp.add_argument("dst")
    imp.set_defaults(func=cmd_import_hf)
    return parser


# -- generate ------------------------------------------------------------------------


def cmd_generate(args) -> int:
    from mmntp.model.sampling import SamplingParams
    from mmntp.pipeline import Pipeline

    if args.server:
        return run_remote_generate(args)
    modality = args.modality or _infer_modality(args)
    pipe = Pipeline.from_pretrained(args.model)
    if modality == "timeseries":
        return _generate_forecast(pipe, args)
    sampling = SamplingParams(
        temperature=1.0 if args.temperature is None else args.temperature,
        top_k=args.top_k or 0,
        top_p=1.0 if args.top_p is None else args.top_p,
        seed=args.seed,
    )
    if modality == "tokens":
        return _generate_tokens(pipe, args, sampling)
    return _generate_text(pipe, args, sampling)


def _infer_modality(args) -> str:
    if args.context:
        return "timeseries"
    if args.prompt_ids:
        return "tokens"
    return "text"


def _generate_tokens(pipe, args, sampling) -> int:
    from mmntp.pipeline import TokenIdsPart, TokensOutput

    if not args.prompt_ids:
        raise ValueError("--prompt-ids is required for --modality tokens")
    try:
        ids = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}"
        ) from None
    result = pipe(TokenIdsPart(ids), TokensOutput(max_tokens=args.max_tokens), sampling)
    payload = {"token_ids": result.token_ids}
    if args.logprobs:
        payload["logprobs"] = result.logprobs
    if args.json:
        _emit(json.dumps(payload), args.output)
    else:
        _emit(" ".join(map(str, result.token_ids)), args.output)
    return 0


def _generate_text(pipe, args, sampling) -> int:
    from mmntp.pipeline import GenerationOutput, TextDelta, TextOutput

    if args.prompt is None:
        raise ValueError("--prompt is required for text generation")
    output = TextOutput(max_tokens=args.max_tokens)
    if args.json or args.output:
        result = pipe(args.prompt, output, sampling)
        payload = {
            "text": result.text,
            "token_ids": result.token_ids,
            "finish_reason": result.finish_reason,
        }
        if args.logprobs:
            payload["logprobs"] = result.logprobs
        _emit(json.dumps(payload) if args.json else result.text, args.output)
        return 0
    for chunk in pipe.stream(args.prompt, output, sampling):
        if isinstance(chunk, TextDelta):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        elif isinstance(chunk, GenerationOutput):
            sys.stdout.write("\n")
    return 0


def _generate_forecast(pipe, args) -> int:
    from mmntp.data.series_io import read_series, write_forecast_csv
    from mmntp.model.sampling import SamplingParams
    from mmntp.pipeline import FORECAST_SAMPLING, TimeSeriesOutput, TimeSeriesPart

    if not args.context:
        raise ValueError("--context FILE is required for --modality timeseries")
    values, _ = read_series(args.context)
    sampling = SamplingParams(
        temperature=FORECAST_SAMPLING.temperature if args.temperature is None else args.temperature,
        top_k=FORECAST_SAMPLING.top_k if args.top_k is None else args.top_k,
        top_p=1.0 if args.top_p is None else args.top_p,
        seed=args.seed,
    )
    output = TimeSeriesOutput(horizon=args.horizon, num_samples=args.num_samples)
    forecast = pipe(TimeSeriesPart(values), output, sampling).forecast
    if args.output:
        write_forecast_csv(args.output, forecast.median, forecast.quantiles)
        print(f"wrote {args.horizon}-step forecast to {args.output}", file=sys.stderr)
    if args.plot:
        from mmntp.eval.plot import plot_forecast

        title = f"{Path(args.context).name}: {args.horizon}-step forecast, {args.num_samples} paths"
        plot_forecast(args.plot, values, forecast.median, forecast.quantiles, title=title)
        print(f"wrote forecast plot to {args.plot}", file=sys.stderr)
    if args.json or not args.output:
        payload = {"median": forecast.median.tolist()}
        payload.update({f"q{q:g}": v.tolist() for q, v in forecast.quantiles.items()})
        print(json.dumps(payload))
    return 0


def _emit(text: str, path: str | None) -> None:
    if path:
        Path(path).write_text(text + "\n")
    else:
        print(text)


# -- eval --------------------------------------------------------------------------


def add_eval_parser(sub) -> None:
    ev = sub.add_parser("eval", help="evaluate a model on held-out data against baselines")
    kinds = ev.add_subparsers(dest="eval_command", required=True)
    ts = kinds.add_parser(
        "timeseries",
        help="MASE / WQL relative to seasonal naive on the bundled series' held-out windows",
    )
    ts.add_argument("--model", help="model or service folder (default: the bundled service)")
    ts.add_argument("--json", action="store_true", help="print one JSON object")
    ts.add_argument("--num-samples", type=int, default=20, help="mmntp sample paths per window")
    ts.add_argument("--seed", type=int, default=0, help="seed the per-window seeds derive from")
    ts.add_argument("--out", help="also write the JSON report (settings, machine, date) here")
    ts.add_argument(
        "--datasets", help="comma-separated datasets or series (default: all), e.g. nile,macrodata"
    )
    ts.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from mmntp.eval.timeseries import (
        EvalSettings,
        evaluate,
        format_table,
        select_series,
        stderr_progress,
    )
    from mmntp.pipeline import Pipeline, default_service_dir

    names = None
    if args.datasets is not None:
        names = tuple(n.strip() for n in args.datasets.split(",") if n.strip())
        if not names:
            raise ValueError(f"--datasets names no dataset: {args.datasets!r}")
    select_series(names)  # an unknown name fails before the model loads
    settings = EvalSettings(num_samples=args.num_samples, seed=args.seed, datasets=names)
    pipe = Pipeline.from_pretrained(args.model)
    report = evaluate(pipe, settings, stderr_progress)
    report["model_path"] = str(args.model or default_service_dir())
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    print(json.dumps(report) if args.json else format_table(report))
    return 0


# -- serve -------------------------------------------------------------------------


def add_serve_parser(sub) -> None:
    srv = sub.add_parser("serve", help="serve a service folder over gRPC")
    srv.add_argument("service", nargs="?", help="service or model folder (default: bundled)")
    srv.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 for all)")
    srv.add_argument("--port", type=int, help="port (default 50051; 0 picks a free one)")
    srv.add_argument("--api-keys-file", help="one API key per line (else $MMNTP_API_KEYS)")
    srv.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    srv.add_argument("--tls-key", help="PEM private key of --tls-cert")
    srv.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    srv.add_argument("--grace", type=float, help="seconds in-flight calls get after SIGTERM")
    srv.add_argument("--no-warmup", action="store_true", help="report SERVING without warm-up")
    srv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    import asyncio
    import logging

    from mmntp.pipeline import Pipeline
    from mmntp.serve.auth import load_api_keys
    from mmntp.serve.server import Server, TlsFiles, serve_until_signal, server_config_for

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("--tls-cert and --tls-key go together")
    config = server_config_for(
        args.service,
        host=args.host,
        port=args.port,
        grace_seconds=args.grace,
        warmup=False if args.no_warmup else None,
    )
    keys = load_api_keys(args.api_keys_file)
    if not keys:
        logging.getLogger("mmntp.serve").warning("no API keys configured: the server is open")
    tls = TlsFiles(Path(args.tls_cert), Path(args.tls_key)) if args.tls_cert else None
    pipe = Pipeline.from_pretrained(args.service)

    async def main() -> None:
        server = Server(pipe, config, keys, tls, args.metrics_port)
        await serve_until_signal(server)

    asyncio.run(main())
    return 0


# -- inspect / train / import-hf ----------------------------------------------------


def cmd_inspect(args) -> int:
    from mmntp.model.checkpoint import load_model

    path = Path(args.dir)
    if (path / "service.json").is_file():
        path = path / json.loads((path / "service.json").read_text()).get("model", "model")
    bundle = load_model(path)
    info = {
        "path": str(path),
        "parameters": bundle.model.num_parameters(),
        "model": bundle.model.config.to_dict(),
        "vocab": bundle.vocab.to_dict(),
        "tokenizers": {k: type(t).__name__ for k, t in bundle.tokenizers.items()},
        "heads": list(bundle.model.heads),
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cfg = bundle.model.config
    print(f"model folder  {path}")
    print(f"parameters    {info['parameters']:,}")
    print(
        f"trunk         dim {cfg.dim}, {cfg.n_layers} layers, {cfg.n_heads} heads "
        f"({cfg.n_kv_heads} kv), ffn {cfg.ffn_dim}, rope_theta {cfg.rope_theta:g}, "
        f"max_seq_len {cfg.max_seq_len}, tied {cfg.tie_embeddings}, qk_norm {cfg.qk_norm}"
    )
    print(f"heads         {', '.join(info['heads'])}")
    print(f"vocabulary    {bundle.vocab.size} ids, {len(bundle.vocab.specials)} specials")
    for r in bundle.vocab.ranges:
        print(f"  {r.modality:<11} codebook {r.codebook}  ids [{r.start}, {r.stop})  size {r.size}")
    for key, tok in bundle.tokenizers.items():
        print(f"tokenizer     {key}: {type(tok).__name__}")
    return 0


def cmd_train(args) -> int:
    from mmntp.train.data import build_data, export_model
    from mmntp.train.recipe import load_recipe
    from mmntp.train.trainer import train

    recipe = load_recipe(args.recipe)
    if args.max_steps is not None:
        recipe.optim.max_steps = args.max_steps
    if args.out_dir:
        recipe.out_dir = str(Path(args.out_dir).resolve())
    if args.export is not None:
        recipe.train.export = str(Path(args.export).resolve()) if args.export else ""
    resume = None if args.resume == "none" else args.resume
    result = train(recipe, build_data, resume=resume, export_fn=export_model)
    print(f"trained to step {result.step}; last checkpoint {result.checkpoint}", file=sys.stderr)
    return 0


def cmd_import_hf(args) -> int:
    from mmntp.model.hf_import import import_hf

    dst = import_hf(args.src, args.dst)
    print(f"wrote mmntp model folder {dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
