"""`mmntp generate`: text, tokens, a forecast, an image or audio — locally or on a server.

One dispatch: the options become api objects once (prompt, output spec, SamplingParams
with unset options left None, so the one validation step fills the modality's
defaults), a backend streams the api chunk types — the local `Pipeline.stream` or the
SDK `Client.generate` — and one loop writes the outputs through `mmntp.client.save`.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mmntp.api import DEFAULT_NUM_SAMPLES
from mmntp.cli import writers
from mmntp.cli.inputs import future_timestamps, read_context, warn_if_unknown_prompt
from mmntp.cli.options import add_connection_arguments, add_torch_threads, make_client

MODALITIES = ["text", "tokens", "timeseries", "image", "audio"]


def add_generate_parser(sub) -> None:
    gen = sub.add_parser("generate", help="generate text, tokens, a forecast, an image or audio")
    gen.add_argument("--model", help="model or service folder (default: the bundled service)")
    gen.add_argument(
        "--modality",
        choices=MODALITIES,
        help="default: timeseries with --context, tokens with --prompt-ids, else from -o's "
        "extension (.png/.jpg image, .wav audio), else text",
    )
    gen.add_argument("--prompt", help="text prompt")
    gen.add_argument("--prompt-ids", help="comma-separated raw token ids")
    gen.add_argument(
        "--context", help="time-series history: CSV (one column or timestamp,value) or JSON"
    )
    gen.add_argument("--column", help="--context CSV: the series' column (header name or index)")
    gen.add_argument(
        "--timestamp-column", help="--context CSV: the timestamps' column (name or index)"
    )
    gen.add_argument("--horizon", type=int, default=24, help="forecast steps")
    gen.add_argument(
        "--num-samples",
        type=int,
        help=f"forecast sample paths (default {DEFAULT_NUM_SAMPLES}, capped by the service)",
    )
    gen.add_argument("--max-tokens", type=int, default=128)
    gen.add_argument(
        "--head",
        choices=["vq", "flow", "diffusion", "tokens", "patch"],
        help="image: vq (default), flow, diffusion; timeseries: tokens or patch (the "
        "next-patch head, where the model has one; default: the model's own)",
    )
    gen.add_argument("--guidance", type=float, help="image/audio: classifier-free guidance scale")
    gen.add_argument("--seconds", type=float, default=1.0, help="audio: duration (default 1)")
    gen.add_argument("--steps", type=int, help="image: flow / diffusion sampling steps")
    gen.add_argument(
        "--width", type=int, default=0, help="image width (0 = native; alone keeps the aspect)"
    )
    gen.add_argument(
        "--height", type=int, default=0, help="image height (0 = native; alone keeps the aspect)"
    )
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--logprobs", action="store_true", help="include log-probabilities")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.add_argument(
        "-o",
        "--output",
        help="write the result here; the format follows the extension (.txt, .json, .csv, "
        ".png, .jpg, .wav) or is refused; '-' = stdout",
    )
    gen.add_argument("--plot", help="forecast: also draw history, median and 10-90%% band (PNG)")
    gen.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="generate on this mmntp server instead of a local model (--model names the "
        "served model)",
    )
    add_connection_arguments(gen, timeout=300.0)
    add_torch_threads(gen)
    gen.set_defaults(func=cmd_generate)


# -- the request: api objects built once ------------------------------------------------


@dataclass
class Request:
    modality: str
    prompt: object
    output: object
    sampling: object
    history: object = None  # forecast: values shaped (length,)
    timestamps: list[str] | None = None  # forecast: the input's


def prompt_ids(args) -> list[int]:
    if not args.prompt_ids:
        raise ValueError("--prompt-ids is required for --modality tokens")
    try:
        return [int(x) for x in args.prompt_ids.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--prompt-ids must be comma-separated integers, got {args.prompt_ids!r}"
        ) from None


def build_request(args, modality: str, target) -> Request:
    """The options as api objects through the mapping batch lines share
    (`mmntp.api.fields`); what only the command line can get wrong is checked here."""
    from mmntp.api.fields import request_from_fields

    fields = {name: getattr(args, name) for name in _OPTION_FIELDS}
    fields["modality"] = modality
    values = stamps = None
    if modality == "tokens":
        fields["prompt_ids"] = prompt_ids(args)
    elif modality == "timeseries":
        if not args.context:
            raise ValueError("--context FILE is required for --modality timeseries")
        values, stamps = read_context(args.context, args.column, args.timestamp_column)
        fields["context"] = values
    elif args.prompt is None:
        hint = {"image": " (the caption)", "audio": ' ("a sine tone at 440 Hz")'}.get(modality, "")
        what = "text generation" if modality == "text" else f"--modality {modality}{hint}"
        raise ValueError(f"--prompt is required for {what}")
    if modality in ("image", "audio") and target is None:
        ext = "png" if modality == "image" else "wav"
        raise ValueError(f"-o/--output FILE.{ext} is required for --modality {modality}")
    if modality == "text" and args.server and args.json and args.logprobs:
        # The API streams text as deltas only; ask for raw ids with --modality tokens.
        raise ValueError("--logprobs with text output is not available with --server")
    req = request_from_fields(fields, strict=False)
    return Request(modality, req.prompt, req.output, req.sampling, values, stamps)


# The options that are request fields of the same name (mmntp.api.fields).
_OPTION_FIELDS = (
    "prompt",
    "horizon",
    "num_samples",
    "max_tokens",
    "head",
    "guidance",
    "seconds",
    "steps",
    "width",
    "height",
    "temperature",
    "top_k",
    "top_p",
    "seed",
)


# -- the backends: one stream of api chunks ------------------------------------------------


def local_stream(args, request: Request):
    from mmntp.generation import Pipeline

    pipe = Pipeline.from_pretrained(args.model)
    yield from pipe.stream(request.prompt, request.output, request.sampling)


def remote_stream(args, request: Request):
    with make_client(args) as client:
        yield from client.generate(request.prompt, request.output, request.sampling)


def cmd_generate(args) -> int:
    from mmntp.client import ClientError

    modality = args.modality or writers.infer_modality(
        args.output, bool(args.context), bool(args.prompt_ids)
    )
    target = writers.output_target(modality, args.output, args.json)
    request = build_request(args, modality, target)
    if args.model is None and not args.server:
        warn_if_unknown_prompt(modality, args.prompt)
    stream = (remote_stream if args.server else local_stream)(args, request)
    try:
        return write_outputs(args, request, stream, target)
    except ClientError as err:
        print(f"mmntp generate: error: {err.code.name}: {err.details}", file=sys.stderr)
        return 2


# -- the one loop that writes --------------------------------------------------------------


@dataclass
class Collected:
    chunks: list = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = "unspecified"
    timings: dict = field(default_factory=dict)
    result: object = None  # the local GenerationOutput (None over gRPC)


def write_outputs(args, request: Request, stream, target) -> int:
    from mmntp import api

    streaming = request.modality == "text" and not args.json and target is None
    got, started = Collected(), time.perf_counter()
    for chunk in stream:
        if isinstance(chunk, api.TextChunk):
            got.text.append(chunk.text)
            if streaming:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
        elif isinstance(chunk, api.TokensChunk):
            got.ids.extend(chunk.ids)
            got.logprobs.extend(chunk.logprobs)
        elif isinstance(chunk, api.ImageChunk):
            writers.note(f"rows {chunk.rows_done}/{chunk.total_rows}")
            got.chunks.append(chunk)
        elif isinstance(chunk, api.AudioChunk):
            end = (chunk.first_sample + len(chunk.samples)) / chunk.sample_rate
            writers.note(f"audio {end:.2f} s")
            got.chunks.append(chunk)
        elif isinstance(chunk, api.SeriesChunk):
            got.chunks.append(chunk)
        elif isinstance(chunk, api.Final):
            got.finish_reason = chunk.finish_reason
            got.chunks.append(chunk)
            got.timings = {
                "queue_seconds": chunk.queue_seconds,
                "first_chunk_seconds": chunk.first_chunk_seconds,
                "total_seconds": chunk.total_seconds,
            }
        elif isinstance(chunk, api.GenerationOutput):
            got.result, got.finish_reason = chunk, chunk.finish_reason
            got.timings = {"queue_seconds": chunk.queue_seconds}
    got.timings["wall_seconds"] = time.perf_counter() - started
    if streaming:
        sys.stdout.write("\n")
        return 0
    write = {
        "text": _write_text,
        "tokens": _write_tokens,
        "timeseries": _write_forecast,
        "image": _write_media,
        "audio": _write_media,
    }[request.modality]
    return write(args, request, got, target)


def _write_text(args, request, got: Collected, target) -> int:
    text = "".join(got.text)
    payload: dict = {"text": text}
    if got.result is not None:
        payload["token_ids"] = got.result.token_ids
    payload["finish_reason"] = got.finish_reason
    if args.logprobs and got.result is not None:
        payload["logprobs"] = got.result.logprobs
    as_json = args.json or (target is not None and target.format == "json")
    writers.write_text(target, json.dumps(payload) if as_json else text)
    return 0


def _write_tokens(args, request, got: Collected, target) -> int:
    payload: dict = {"token_ids": got.ids}
    if args.logprobs:
        payload["logprobs"] = got.logprobs
    as_json = args.json or (target is not None and target.format == "json")
    writers.write_text(target, json.dumps(payload) if as_json else " ".join(map(str, got.ids)))
    return 0


def _write_forecast(args, request: Request, got: Collected, target) -> int:
    from mmntp.client.messages import ForecastCollector
    from mmntp.client.save import forecast_csv_text, forecast_json

    collector = ForecastCollector()
    for chunk in got.chunks:
        collector.add(chunk)
    result = collector.result()
    stamps = future_timestamps(request.timestamps, result.steps)
    if target is not None:
        if target.format == "json":
            text = json.dumps(forecast_json(result, stamps))
        else:
            text = forecast_csv_text(result, stamps).rstrip("\n")
        writers.write_text(target, text)
        if target.path is not None:
            writers.note(f"wrote {args.horizon}-step forecast to {target.path}")
    if args.plot:
        from mmntp.eval.plot import plot_forecast

        title = f"{Path(args.context).name}: {args.horizon}-step forecast, {args.num_samples} paths"
        times = _plot_times(request.timestamps, stamps)
        plot_forecast(
            args.plot, request.history, result.median, result.quantiles, title=title, times=times
        )
        writers.note(f"wrote forecast plot to {args.plot}")
    if target is None or (args.json and target.path is not None):
        payload = {"median": result.median.tolist()}
        payload.update({f"q{q:g}": v.tolist() for q, v in result.quantiles.items()})
        if stamps is not None:
            payload["timestamps"] = stamps
        print(json.dumps(payload))
    return 0


def _plot_times(history: list[str] | None, future: list[str] | None):
    """The plot's x values (history then forecast) as datetimes, or None (step numbers)."""
    if history is None or future is None:
        return None
    try:
        import pandas as pd

        return pd.to_datetime([*history, *future]).to_pydatetime()
    except (ImportError, ValueError, TypeError):
        return None


def _write_media(args, request: Request, got: Collected, target) -> int:
    from mmntp.client.save import image_bytes, wav_bytes

    if request.modality == "image":
        data = image_bytes(got.chunks, "JPEG" if target.format == "jpeg" else "PNG")
    else:
        data = wav_bytes(got.chunks)
    writers.write_bytes(target, data)
    writers.note(f"wrote {target.name}")
    if args.json:
        summary = {
            "output": target.name,
            "format": target.format,
            "bytes": len(data),
            "finish_reason": got.finish_reason,
            "timings": got.timings,
        }
        if request.modality == "audio":
            rate = got.chunks[0].sample_rate
            summary["seconds"] = sum(len(c.samples) for c in got.chunks) / rate
        else:
            final = [c for c in got.chunks if c.final] or got.chunks
            summary["height"], summary["width"] = final[-1].image().shape[:2]
        print(json.dumps(summary), file=sys.stderr if target.path is None else sys.stdout)
    return 0
