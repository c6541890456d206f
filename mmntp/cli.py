"""The `mmntp` command line.

generate | serve | health | bench | eval | inspect | train | train-tokenizer | tokenize |
detokenize | import-hf
"""

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

    gen = sub.add_parser("generate", help="generate text, tokens, a forecast, an image or audio")
    gen.add_argument("--model", help="model or service folder (default: the bundled service)")
    gen.add_argument("--modality", choices=["text", "tokens", "timeseries", "image", "audio"])
    gen.add_argument("--prompt", help="text prompt")
    gen.add_argument("--prompt-ids", help="comma-separated raw token ids")
    gen.add_argument(
        "--context", help="time-series history: CSV (one column or timestamp,value) or JSON"
    )
    gen.add_argument("--horizon", type=int, default=24, help="forecast steps")
    gen.add_argument("--num-samples", type=int, default=20, help="forecast sample paths")
    gen.add_argument("--max-tokens", type=int, default=128)
    gen.add_argument("--head", choices=["vq", "flow", "diffusion"], default="vq", help="image head")
    gen.add_argument("--guidance", type=float, help="image/audio: classifier-free guidance scale")
    gen.add_argument("--seconds", type=float, default=1.0, help="audio: duration (default 1)")
    gen.add_argument("--steps", type=int, help="image: flow / diffusion sampling steps")
    gen.add_argument("--width", type=int, default=0, help="image width (0 = native)")
    gen.add_argument("--height", type=int, default=0, help="image height (0 = native)")
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

    tr = sub.add_parser("train", help="train a model from a TOML recipe or curriculum")
    tr.add_argument("recipe", help="a recipe, or a curriculum ([[stages]]: all unfinished ones)")
    tr.add_argument("--stage", help="a curriculum's stage to train (alone)")
    tr.add_argument("--write-card", action="store_true", help="regenerate CARD.md's stage list")
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

    add_tokenizer_parsers(sub)
    return parser


# -- generate ------------------------------------------------------------------------


def cmd_generate(args) -> int:
    from mmntp.generation import Pipeline

    if args.server:
        return run_remote_generate(args)
    modality = args.modality or _infer_modality(args)
    pipe = Pipeline.from_pretrained(args.model)
    if modality == "timeseries":
        return _generate_forecast(pipe, args)
    if modality == "image":
        return _generate_image(pipe, args)
    if modality == "audio":
        return _generate_audio(pipe, args)
    sampling = sampling_from_args(args)
    if modality == "tokens":
        return _generate_tokens(pipe, args, sampling)
    return _generate_text(pipe, args, sampling)


def sampling_from_args(args, **extra):
    """SamplingParams from `generate`'s --temperature/--top-k/--top-p/--seed (local and
    --server alike); an option not given stays None: the modality's default, filled by
    the validation step."""
    from mmntp.api import SamplingParams

    return SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=1.0 if args.top_p is None else args.top_p,
        seed=args.seed,
        **extra,
    )


def _infer_modality(args) -> str:
    if args.context:
        return "timeseries"
    if args.prompt_ids:
        return "tokens"
    return "text"


def prompt_ids(args) -> list[int]:
    """--prompt-ids as integers (local and --server alike)."""
    if not args.prompt_ids:
        raise ValueError("--prompt-ids is required for --modality tokens")
    try:
        return [int(x) for x in args.prompt_ids.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}"
        ) from None


def _generate_tokens(pipe, args, sampling) -> int:
    from mmntp.generation import TokenIdsPart, TokensOutput

    ids = prompt_ids(args)
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
    from mmntp.generation import GenerationOutput, TextChunk, TextOutput

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
        if isinstance(chunk, TextChunk):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        elif isinstance(chunk, GenerationOutput):
            sys.stdout.write("\n")
    return 0


def forecast_request(args):
    """(context values, SamplingParams) from `generate`'s options (local and --server alike)."""
    from mmntp.api.series_io import read_series

    if not args.context:
        raise ValueError("--context FILE is required for --modality timeseries")
    values, _ = read_series(args.context)
    sampling = sampling_from_args(args)
    return values, sampling


def _generate_forecast(pipe, args) -> int:
    from mmntp.api.series_io import write_forecast_csv
    from mmntp.generation import TimeSeriesOutput, TimeSeriesPart

    values, sampling = forecast_request(args)
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


def image_request(args):
    """(ImageOutput, SamplingParams) from `generate`'s options (local and --server alike)."""
    from mmntp.api import ImageOutput

    if args.prompt is None:
        raise ValueError("--prompt is required for --modality image (the caption)")
    if not args.output:
        raise ValueError("-o/--output FILE.png is required for --modality image")
    sampling = sampling_from_args(
        args, guidance_scale=args.guidance, num_steps=args.steps
    )
    return ImageOutput(args.width, args.height, args.head), sampling


def _generate_image(pipe, args) -> int:
    from mmntp.api import ImageChunk

    output, sampling = image_request(args)
    for chunk in pipe.stream(args.prompt, output, sampling):
        if isinstance(chunk, ImageChunk):
            print(f"rows {chunk.rows_done}/{chunk.total_rows}", file=sys.stderr)
            if chunk.final:
                Path(args.output).write_bytes(chunk.png)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def audio_request(args):
    """(AudioOutput, SamplingParams) from `generate`'s options (local and --server alike)."""
    from mmntp.api import AudioOutput

    if args.prompt is None:
        raise ValueError('--prompt is required for --modality audio ("a sine tone at 440 Hz")')
    if not args.output or not args.output.endswith(".wav"):
        raise ValueError("-o/--output FILE.wav is required for --modality audio")
    sampling = sampling_from_args(args, guidance_scale=args.guidance)
    return AudioOutput(seconds=args.seconds), sampling


def _generate_audio(pipe, args) -> int:
    from mmntp.api import AudioChunk, GenerationOutput
    from mmntp.data.audio import wav_bytes

    output, sampling = audio_request(args)
    for chunk in pipe.stream(args.prompt, output, sampling):
        if isinstance(chunk, AudioChunk):
            end = (chunk.first_sample + len(chunk.samples)) / chunk.sample_rate
            print(f"audio {end:.2f} s", file=sys.stderr)
        elif isinstance(chunk, GenerationOutput):
            Path(args.output).write_bytes(wav_bytes(chunk.audio, chunk.sample_rate))
    print(f"wrote {args.output}", file=sys.stderr)
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
    im = kinds.add_parser(
        "image", help="text-to-image prompt adherence (colour, shape) and speed, per head"
    )
    im.add_argument("--model", help="model or service folder (default: the bundled service)")
    im.add_argument(
        "--num-prompts", type=int, default=1000, help="procedural captions (default 1000)"
    )
    im.add_argument("--heads", default="vq", help="comma-separated heads (default vq)")
    im.add_argument("--guidance", default="1,3", help="comma-separated guidance scales")
    im.add_argument("--seed", type=int, default=0)
    im.add_argument("--batch", type=int, default=16, help="images/s at this batch (default 16)")
    im.add_argument("--json", action="store_true", help="print one JSON object")
    im.add_argument("--out", help="also write the JSON report here")
    im.set_defaults(func=cmd_eval_image)
    au = kinds.add_parser(
        "audio", help="tone-prompt pitch adherence and streaming speed (local and over gRPC)"
    )
    au.add_argument("--model", help="model or service folder (default: the bundled service)")
    au.add_argument("--num-prompts", type=int, default=48, help="tone captions (default 48)")
    au.add_argument("--seconds", type=float, default=1.0, help="clip length (default 1)")
    au.add_argument(
        "--guidance", default="1,2,3", help="comma-separated guidance scales (default 1,2,3)"
    )
    au.add_argument("--seed", type=int, default=0)
    au.add_argument("--no-grpc", action="store_true", help="skip the over-gRPC figures")
    au.add_argument("--json", action="store_true", help="print one JSON object")
    au.add_argument("--out", help="also write the JSON report here")
    au.set_defaults(func=cmd_eval_audio)


def cmd_eval(args) -> int:
    from mmntp.eval.timeseries import (
        EvalSettings,
        evaluate,
        format_table,
        select_series,
        stderr_progress,
    )
    from mmntp.generation import Pipeline, default_service_dir

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


def _guidance_scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(g) for g in text.split(",") if g.strip())
    except ValueError:
        raise ValueError(f"--guidance must be comma-separated numbers, got {text!r}") from None


def _report(args, report: dict, table: str) -> int:
    """Print an eval report (table, or JSON with --json) and write it to --out."""
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report) if args.json else table)
    return 0


def _eval_progress(message: str) -> None:
    print(f"[eval] {message}", file=sys.stderr)


def cmd_eval_image(args) -> int:
    from mmntp.eval.text_to_image import ImageEvalSettings, evaluate, format_table
    from mmntp.generation import Pipeline

    guidance = _guidance_scales(args.guidance)
    heads = tuple(h.strip() for h in args.heads.split(",") if h.strip())
    settings = ImageEvalSettings(args.num_prompts, heads, guidance, args.seed, args.batch)
    report = evaluate(Pipeline.from_pretrained(args.model), settings, _eval_progress)
    return _report(args, report, format_table(report))


def cmd_eval_audio(args) -> int:
    from mmntp.eval.text_to_audio import AudioEvalSettings, evaluate, format_table
    from mmntp.generation import Pipeline

    guidance = _guidance_scales(args.guidance)
    settings = AudioEvalSettings(
        args.num_prompts, args.seconds, guidance, args.seed, grpc=not args.no_grpc
    )
    report = evaluate(Pipeline.from_pretrained(args.model), settings, _eval_progress)
    return _report(args, report, format_table(report))


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
    srv.add_argument(
        "--torch-threads",
        type=int,
        help="torch intra-op threads (service.json server.torch_threads, default 1; 0 = torch's)",
    )
    srv.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    import asyncio
    import logging

    from mmntp.generation import Pipeline
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
        torch_threads=args.torch_threads,
    )
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
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
    from mmntp.train.curriculum import is_curriculum, train_command
    from mmntp.train.data import build_data, export_model
    from mmntp.train.recipe import load_recipe
    from mmntp.train.trainer import train

    if is_curriculum(args.recipe) or args.stage or args.write_card:
        return train_command(args)
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


# -- tokenizers: train-tokenizer / tokenize / detokenize -----------------------------


def add_tokenizer_parsers(sub) -> None:
    tt = sub.add_parser(
        "train-tokenizer", help="train an image or audio tokenizer from a TOML recipe"
    )
    tt.add_argument("recipe")
    tt.add_argument("--max-steps", type=int, help="override optim.max_steps")
    tt.add_argument("--out-dir", help="write the card folder here (default: the recipe's)")
    tt.add_argument("--no-progress", action="store_true", help="no progress bar")
    tt.set_defaults(func=cmd_train_tokenizer)

    tok = sub.add_parser("tokenize", help="turn a file into codes with a tokenizer card")
    tok.add_argument("tokenizer", help="tokenizer card folder")
    tok.add_argument("input", help="image (PNG/JPEG), audio (WAV/FLAC), text (.txt) or series")
    tok.add_argument("-o", "--output", required=True, help="CODES.npy (state: CODES.json)")
    tok.set_defaults(func=cmd_tokenize)

    det = sub.add_parser("detokenize", help="turn codes back into a file with a tokenizer card")
    det.add_argument("tokenizer", help="tokenizer card folder")
    det.add_argument("codes", help="CODES.npy written by tokenize (CODES.json beside it)")
    det.add_argument("-o", "--output", required=True, help="image (PNG), WAV, .txt or series CSV")
    det.set_defaults(func=cmd_detokenize)


def cmd_train_tokenizer(args) -> int:
    import tomllib

    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {args.max_steps}")
    try:
        kind = tomllib.loads(Path(args.recipe).read_text()).get("kind")
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{args.recipe} is not valid TOML: {err}") from None
    progress = not args.no_progress
    if kind == "codec":
        from mmntp.train.audio_codec import train_codec

        _, result = train_codec(args.recipe, args.out_dir, args.max_steps, progress)
    elif kind == "cochlear":
        from mmntp.train.cochlear import train_cochlear

        _, result = train_cochlear(args.recipe, args.out_dir, args.max_steps, progress)
    else:  # the image kinds ("vq", "kl"); the recipe loader names a bad kind
        from mmntp.train.image_tokenizer import load_image_recipe, train_image_tokenizer

        recipe = load_image_recipe(args.recipe)
        if args.max_steps is not None:
            recipe.optim.max_steps = args.max_steps
            recipe.optim.warmup_steps = min(recipe.optim.warmup_steps, args.max_steps)
        _, result = train_image_tokenizer(recipe, out_dir=args.out_dir, progress=progress)
    print(f"trained {result.steps} steps in {result.wall_s:.0f} s", file=sys.stderr)
    return 0


def cmd_tokenize(args) -> int:
    import numpy as np

    from mmntp.tokenizers import load_tokenizer

    output = _npy_path(args.output)
    tok = load_tokenizer(args.tokenizer)
    signal, extra = _read_signal(tok.modality, Path(args.input))
    encoded = tok.encode(signal)
    codes = encoded.codes.detach().cpu().numpy()
    meta = {"tokenizer": tok.type_name, "modality": tok.modality, "state": encoded.state}
    meta.update(extra)
    sidecar = output.with_suffix(".json")
    output.parent.mkdir(parents=True, exist_ok=True)
    sidecar.write_text(json.dumps(meta, indent=2) + "\n")
    np.save(output, codes, allow_pickle=False)
    print(f"wrote {output} {codes.dtype} {list(codes.shape)} and {sidecar}", file=sys.stderr)
    return 0


def cmd_detokenize(args) -> int:
    import numpy as np
    import torch

    from mmntp.tokenizers import load_tokenizer

    codes_path = _npy_path(args.codes)
    tok = load_tokenizer(args.tokenizer)
    sidecar = codes_path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    if meta.get("tokenizer", tok.type_name) != tok.type_name:
        raise ValueError(f"{codes_path} was made by {meta['tokenizer']!r}, not {tok.type_name!r}")
    codes = torch.from_numpy(np.load(codes_path, allow_pickle=False))
    signal = tok.decode(codes, meta.get("state") or None)
    _write_signal(tok.modality, signal, Path(args.output), meta)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _npy_path(path: str) -> Path:
    if not path.endswith(".npy"):
        raise ValueError(f"codes file must end in .npy, got {path!r}")
    return Path(path)


def _read_signal(modality: str, path: Path) -> tuple[object, dict]:
    """A file -> (what the tokenizer's encode takes, extra sidecar fields)."""
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r} does not exist")
    if modality == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return image.convert("RGB"), {}
        except UnidentifiedImageError as err:
            raise ValueError(f"{path} is not an image PIL can read") from err
    if modality == "text":
        return path.read_text(encoding="utf-8"), {}
    if modality == "timeseries":
        from mmntp.api.series_io import read_series

        values, timestamps = read_series(path)
        return values, ({"timestamps": timestamps} if timestamps else {})
    if modality == "audio":
        from mmntp.data.audio import read_wav

        return read_wav(path, field=str(path)), {}
    raise ValueError(f"tokenize does not read {modality!r} files yet")


def _write_signal(modality: str, signal, path: Path, meta: dict) -> None:
    """Writes a decoded signal: image -> PNG (or the suffix's format), text, series CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if modality == "image":
        from PIL import Image

        pixels = (signal.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()  # (H, W, 3)
        Image.fromarray(pixels).save(path)
    elif modality == "text":
        path.write_text(signal, encoding="utf-8")
    elif modality == "timeseries":
        values = [f"{float(v):.9g}" for v in signal.tolist()]  # NaN -> "nan", read as missing
        stamps = meta.get("timestamps")
        if stamps and len(stamps) == len(values):
            rows = ["timestamp,value", *(f"{t},{v}" for t, v in zip(stamps, values))]
        else:
            rows = ["value", *values]
        path.write_text("\n".join(rows) + "\n")
    elif modality == "audio":
        from mmntp.data.audio import SAMPLE_RATE, wav_bytes

        samples = signal.detach().cpu().numpy() if hasattr(signal, "detach") else signal
        path.write_bytes(wav_bytes(samples, SAMPLE_RATE))
    else:
        raise ValueError(f"detokenize does not write {modality!r} files yet")


if __name__ == "__main__":
    sys.exit(main())
