"""Proto <-> `mmntp.schema`: request validation and chunk conversion for the service.

Every check raises `InvalidArgument` whose message starts with the field path
(`prompt[0].timeseries.values[3]: ...`, `output.timeseries.horizon must be ...`), so the
servicer can hand it to the client as INVALID_ARGUMENT unchanged. Inputs of a modality
this model has no tokenizer for are validated first (a broken PNG is reported as such)
and then refused, naming the modality.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmntp import sequence
from mmntp.data.audio import SUPPORTED_RATES
from mmntp.jobs import image_heads
from mmntp.model.sampling import SamplingParams
from mmntp.schema import (
    AUDIO_SAMPLING,
    DEFAULT_QUANTILES,
    FORECAST_SAMPLING,
    IMAGE_SAMPLING,
    AudioChunk,
    AudioOutput,
    GenerationOutput,
    ImageOutput,
    ImageStep,
    Limits,
    OutputSpec,
    PromptPart,
    SeriesStep,
    TextDelta,
    TextOutput,
    TextPart,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensDelta,
    TokensOutput,
)
from mmntp.v1 import generation_pb2 as pb

DEFAULT_TEXT_TOKENS = TextOutput().max_tokens
DEFAULT_TOKENS = TokensOutput().max_tokens
DEFAULT_NUM_SAMPLES = 20
MAX_REQUEST_ID_CHARS = 128
_FLOAT32_MAX = float(np.finfo(np.float32).max)

MODALITY_NAMES = {
    pb.MODALITY_TEXT: "text",
    pb.MODALITY_IMAGE: "image",
    pb.MODALITY_AUDIO: "audio",
    pb.MODALITY_TIMESERIES: "timeseries",
    pb.MODALITY_MOTION: "motion",
    pb.MODALITY_TOKENS: "tokens",
}
MODALITY_ENUMS = {name: value for value, name in MODALITY_NAMES.items()}
FINISH_REASONS = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "abort": pb.FINISH_REASON_ABORT,
    "deadline": pb.FINISH_REASON_DEADLINE,
}
# The outputs the pipeline can produce, and the tokenizer each one needs (None: raw ids).
OUTPUT_TOKENIZER = {
    "text": "text",
    "timeseries": "timeseries",
    "tokens": None,
    "image": "image",
    "audio": "audio",
}


class InvalidArgument(ValueError):
    """A request field is malformed or out of range; the message starts with its path."""


@dataclass
class GenerateArgs:
    """A validated GenerateRequest in pipeline terms, plus what the stream must include."""

    prompt: list[PromptPart]
    output: OutputSpec
    sampling: SamplingParams
    modality: str  # "text" | "tokens" | "timeseries" | "image"
    logprobs: bool = False
    return_samples: bool = False


# -- requests ------------------------------------------------------------------------


def generate_args(request: pb.GenerateRequest, pipe: Any) -> GenerateArgs:
    """Validate a GenerateRequest against the pipeline's model and limits."""
    check_request_id(request.request_id)
    if not request.prompt:
        raise InvalidArgument("prompt: empty prompt")
    parts = [prompt_part(p, f"prompt[{i}]", pipe) for i, p in enumerate(request.prompt)]
    modality, output = output_spec(request, pipe)
    _check_prompt_fits_output(parts, modality)
    sampling = sampling_params(request.sampling, modality)
    spec = request.output
    return GenerateArgs(
        parts,
        output,
        sampling,
        modality,
        logprobs=modality == "tokens" and spec.tokens.logprobs,
        return_samples=modality == "timeseries" and spec.timeseries.return_samples,
    )


def check_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument(
            f"request_id must be at most {MAX_REQUEST_ID_CHARS} characters, got {len(request_id)}"
        )
    if not request_id.isprintable() or any(c.isspace() for c in request_id):
        raise InvalidArgument(f"request_id must be printable without spaces, got {request_id!r}")


def prompt_part(part: pb.PromptPart, path: str, pipe: Any) -> PromptPart:
    """One proto prompt part -> a schema part; other modalities are checked, then refused."""
    kind = part.WhichOneof("part")
    if kind is None:
        raise InvalidArgument(f"{path}: no modality set (text, image, audio, ...)")
    if kind == "text":
        _require_tokenizer(pipe, "text", f"{path}.text")
        return TextPart(part.text)
    if kind == "token_ids":
        return TokenIdsPart(check_ids(part.token_ids.ids, pipe.vocab.size, f"{path}.token_ids.ids"))
    if kind == "timeseries":
        values = series_values(part.timeseries.values, f"{path}.timeseries.values")
        stamps = list(part.timeseries.timestamps)
        if stamps and len(stamps) != len(values):
            raise InvalidArgument(
                f"{path}.timeseries.timestamps: {len(stamps)} labels for {len(values)} values"
            )
        _require_tokenizer(pipe, "timeseries", f"{path}.timeseries")
        return TimeSeriesPart(values, stamps or None)
    check = {"image": check_image, "audio": check_audio, "motion": check_motion}[kind]
    check(getattr(part, kind), f"{path}.{kind}", pipe.limits)
    _require_tokenizer(pipe, kind, f"{path}.{kind}")
    # A model with such a tokenizer still has no pipeline path for the prompt.
    raise InvalidArgument(f"{path}.{kind}: {kind} prompts are not supported by this server yet")


def _require_tokenizer(pipe: Any, modality: str, path: str) -> None:
    if modality not in pipe.bundle.tokenizers:
        raise InvalidArgument(
            f"{path}: this model has no {modality} tokenizer "
            f"(prompt modalities: {', '.join(input_modalities(pipe))})"
        )


def check_ids(ids: Sequence[int], vocab_size: int, path: str) -> list[int]:
    for j, i in enumerate(ids):
        if not 0 <= i < vocab_size:
            raise InvalidArgument(
                f"{path}[{j}]: id {i} is outside the vocabulary [0, {vocab_size})"
            )
    return list(ids)


def series_values(values: Sequence[float], path: str) -> np.ndarray:
    """A series (T,) as float64: NaN marks a missing value, ±inf and float32 overflow fail."""
    array = np.asarray(values, dtype=np.float64)  # array: [T]
    if array.size == 0:
        raise InvalidArgument(f"{path}: empty time series")
    bad = np.flatnonzero(np.isinf(array) | (np.abs(array) > _FLOAT32_MAX))
    if bad.size:
        j = int(bad[0])
        raise InvalidArgument(
            f"{path}[{j}]: NaN/inf check failed: {array[j]!r} is not allowed (values must be "
            "finite within the float32 range; NaN marks a missing value)"
        )
    if np.isnan(array).all():
        raise InvalidArgument(f"{path}: every value is NaN (missing)")
    return array


def check_image(image: pb.ImageInput, path: str, limits: Limits) -> None:
    """The bytes are a decodable PNG or JPEG within max_image_pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(image.data))
    except Image.DecompressionBombError:
        raise InvalidArgument(
            f"{path}: the image exceeds max_image_pixels {limits.max_image_pixels}"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InvalidArgument(f"{path}: not a PNG or JPEG image") from None
    with img:
        if img.format not in ("PNG", "JPEG"):
            raise InvalidArgument(f"{path}: not a PNG or JPEG image (got {img.format})")
        width, height = img.size
        if width * height > limits.max_image_pixels:
            raise InvalidArgument(
                f"{path}: {width}x{height} = {width * height} pixels exceeds max_image_pixels "
                f"{limits.max_image_pixels}"
            )
        try:
            img.load()
        except (OSError, ValueError, SyntaxError) as err:
            raise InvalidArgument(f"{path}: corrupt {img.format} image: {err}") from None


def check_audio(audio: pb.AudioInput, path: str, limits: Limits) -> None:
    """A decodable WAV file, or 16-bit PCM with a sample rate; within max_audio_seconds."""
    import soundfile

    source = audio.WhichOneof("source")
    if source is None:
        raise InvalidArgument(f"{path}: no audio given (wav or pcm)")
    if source == "pcm":
        pcm = audio.pcm
        if pcm.sample_rate not in SUPPORTED_RATES:
            raise InvalidArgument(
                f"{path}.pcm.sample_rate: {pcm.sample_rate} Hz is not supported "
                f"({', '.join(map(str, SUPPORTED_RATES))})"
            )
        if not pcm.data or len(pcm.data) % 2:
            raise InvalidArgument(
                f"{path}.pcm.data must hold 16-bit samples (a positive even number of bytes), "
                f"got {len(pcm.data)} bytes"
            )
        seconds = len(pcm.data) / 2 / pcm.sample_rate
    else:
        try:
            with soundfile.SoundFile(io.BytesIO(audio.wav)) as f:
                if f.format not in ("WAV", "WAVEX"):
                    raise InvalidArgument(f"{path}.wav: not a WAV file (got {f.format})")
                if f.samplerate not in SUPPORTED_RATES:
                    raise InvalidArgument(
                        f"{path}.wav: sample rate {f.samplerate} Hz is not supported "
                        f"({', '.join(map(str, SUPPORTED_RATES))})"
                    )
                seconds = f.frames / f.samplerate
                if seconds <= limits.max_audio_seconds:
                    f.read(dtype="float32")  # decodes every frame: catches a truncated file
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
            if isinstance(err, InvalidArgument):
                raise
            raise InvalidArgument(f"{path}.wav: not a WAV file") from None
        if seconds == 0:
            raise InvalidArgument(f"{path}.wav: the file holds no samples")
    if seconds > limits.max_audio_seconds:
        raise InvalidArgument(
            f"{path}: {seconds:.2f} s exceeds max_audio_seconds {limits.max_audio_seconds:g}"
        )


def check_motion(motion: pb.MotionInput, path: str, limits: Limits) -> None:
    """frames x num_features finite values, row-major."""
    if motion.num_features <= 0:
        raise InvalidArgument(
            f"{path}.num_features must be a positive integer, got {motion.num_features}"
        )
    n = len(motion.values)
    if n == 0 or n % motion.num_features:
        raise InvalidArgument(
            f"{path}.values: {n} values is not a positive multiple of num_features "
            f"{motion.num_features}"
        )
    values = np.asarray(motion.values, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        j = int(bad[0])
        raise InvalidArgument(f"{path}.values[{j}]: {values[j]!r} is not finite (NaN/inf)")


def output_spec(request: pb.GenerateRequest, pipe: Any) -> tuple[str, OutputSpec]:
    """(output modality, schema output spec); image/audio/motion are checked, then refused."""
    spec = request.output
    kind = spec.WhichOneof("spec")
    limits: Limits = pipe.limits
    if kind is None:
        raise InvalidArgument("output: no output spec given (text, timeseries, tokens, ...)")
    if kind == "text":
        max_tokens = _max_tokens(spec.text.max_tokens, DEFAULT_TEXT_TOKENS, "output.text", limits)
        output: OutputSpec = TextOutput(max_tokens=max_tokens)
    elif kind == "tokens":
        max_tokens = _max_tokens(spec.tokens.max_tokens, DEFAULT_TOKENS, "output.tokens", limits)
        stops = check_ids(spec.tokens.stop_ids, pipe.vocab.size, "output.tokens.stop_ids")
        output = TokensOutput(max_tokens=max_tokens, stop_ids=tuple(stops))
    elif kind == "timeseries":
        output = _forecast_spec(spec.timeseries, limits)
    elif kind == "image" and image_heads(pipe):
        image = spec.image
        _check_continuous_spec(kind, image, limits)
        output = ImageOutput(
            image.width, image.height, image.head or "vq", image.preview_every_rows
        )
    elif kind == "audio" and "audio" in pipe.bundle.tokenizers:
        _check_continuous_spec(kind, spec.audio, limits)
        output = AudioOutput(seconds=float(spec.audio.seconds))
    else:
        _check_continuous_spec(kind, getattr(spec, kind), limits)
        raise InvalidArgument(
            f"output.{kind}: this model cannot generate {kind} "
            f"(output modalities: {', '.join(output_modalities(pipe))})"
        )
    needs = OUTPUT_TOKENIZER[kind] if kind != "image" else None  # image: checked above
    if needs is not None and needs not in pipe.bundle.tokenizers:
        raise InvalidArgument(
            f"output.{kind}: this model has no {needs} tokenizer "
            f"(output modalities: {', '.join(output_modalities(pipe))})"
        )
    return kind, output


def _max_tokens(value: int, default: int, path: str, limits: Limits) -> int:
    if value == 0:
        return min(default, limits.max_output_tokens)
    if not 1 <= value <= limits.max_output_tokens:
        raise InvalidArgument(
            f"{path}.max_tokens must be an integer in [1, {limits.max_output_tokens}] "
            f"(0 = default), got {value}"
        )
    return value


def _forecast_spec(spec: pb.TimeSeriesSpec, limits: Limits) -> TimeSeriesOutput:
    path = "output.timeseries"
    if not 1 <= spec.horizon <= limits.timeseries_max_horizon:
        raise InvalidArgument(
            f"{path}.horizon must be an integer in [1, {limits.timeseries_max_horizon}], "
            f"got {spec.horizon}"
        )
    num_samples = spec.num_samples or min(DEFAULT_NUM_SAMPLES, limits.timeseries_max_samples)
    if not 1 <= num_samples <= limits.timeseries_max_samples:
        raise InvalidArgument(
            f"{path}.num_samples must be an integer in [1, {limits.timeseries_max_samples}] "
            f"(0 = {DEFAULT_NUM_SAMPLES}), got {spec.num_samples}"
        )
    quantiles = tuple(spec.quantiles) or DEFAULT_QUANTILES
    for j, q in enumerate(quantiles):
        if not 0.0 < q < 1.0:  # also false for NaN
            raise InvalidArgument(f"{path}.quantiles[{j}] must lie strictly in (0, 1), got {q}")
        if q in quantiles[:j]:
            raise InvalidArgument(f"{path}.quantiles[{j}]: level {q} is given twice")
    return TimeSeriesOutput(spec.horizon, num_samples, quantiles)


def _check_continuous_spec(kind: str, spec: Any, limits: Limits) -> None:
    path = f"output.{kind}"
    if kind == "image":
        if spec.width < 0 or spec.height < 0:
            raise InvalidArgument(
                f"{path}: width and height must be >= 0, got {spec.width}x{spec.height}"
            )
        if spec.width * spec.height > limits.max_image_pixels:
            raise InvalidArgument(
                f"{path}: {spec.width}x{spec.height} exceeds max_image_pixels {limits.max_image_pixels}"
            )
        if spec.head not in ("", "vq", "flow", "diffusion"):
            raise InvalidArgument(f"{path}.head must be vq, flow or diffusion, got {spec.head!r}")
        if spec.preview_every_rows < 0:
            raise InvalidArgument(
                f"{path}.preview_every_rows must be >= 0, got {spec.preview_every_rows}"
            )
    elif kind == "audio":
        if not 0 < spec.seconds <= limits.max_audio_seconds:  # also false for NaN
            raise InvalidArgument(
                f"{path}.seconds must lie in (0, {limits.max_audio_seconds:g}], got {spec.seconds}"
            )
    elif kind == "motion" and spec.frames <= 0:
        raise InvalidArgument(f"{path}.frames must be a positive integer, got {spec.frames}")


def _check_prompt_fits_output(parts: list[PromptPart], modality: str) -> None:
    """The combinations the pipeline supports, refused early with a field path."""
    series = [i for i, p in enumerate(parts) if isinstance(p, TimeSeriesPart)]
    if modality == "timeseries":
        if len(parts) != 1 or not series:
            kinds = ", ".join(_part_name(p) for p in parts)
            raise InvalidArgument(
                f"prompt: a forecast takes exactly one timeseries part, got [{kinds}]"
            )
    elif series:
        raise InvalidArgument(
            f"prompt[{series[0]}].timeseries: a time series can only be forecast "
            f"(output.timeseries), not continued as {modality}"
        )


def _part_name(part: PromptPart) -> str:
    return {TextPart: "text", TokenIdsPart: "token_ids", TimeSeriesPart: "timeseries"}[type(part)]


def sampling_params(msg: pb.SamplingParams, modality: str) -> SamplingParams:
    """Proto sampling -> SamplingParams; unset fields take the modality's defaults."""
    base = {
        "timeseries": FORECAST_SAMPLING,
        "image": IMAGE_SAMPLING,
        "audio": AUDIO_SAMPLING,
    }.get(modality, SamplingParams())
    names = ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "seed"]
    for name in ("guidance_scale", "num_steps"):
        if modality == "image" or (modality == "audio" and name == "guidance_scale"):
            names.append(name)
        elif msg.HasField(name):
            raise InvalidArgument(
                f"sampling.{name} applies to image (and audio) outputs only, not {modality}"
            )
    values = {
        name: getattr(msg, name) if msg.HasField(name) else getattr(base, name) for name in names
    }
    for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
        values[name] = float(values[name])
    if values.get("guidance_scale") is not None:
        values["guidance_scale"] = float(values["guidance_scale"])
    try:
        return SamplingParams(**values)
    except ValueError as err:
        raise InvalidArgument(f"sampling.{err}") from None


def with_field_path(message: str, modality: str) -> str:
    """Prefix a pipeline/engine ValueError with the request field it is about."""
    if message.startswith(("prompt", "output", "sampling", "request_id")):
        return message
    if message.startswith("max_tokens"):
        return f"output.{modality}.{message}"
    if message.startswith(("horizon", "num_samples", "quantiles")):
        return f"output.timeseries.{message}"
    if message.startswith(("context has", "time series values")):
        return f"prompt[0].timeseries: {message}"
    return message


# -- ListModels / Tokenize / Detokenize --------------------------------------------------


def output_modalities(pipe: Any) -> list[str]:
    toks = pipe.bundle.tokenizers
    out = [m for m, needs in OUTPUT_TOKENIZER.items() if needs is None or needs in toks]
    if "image" not in out and image_heads(pipe):  # continuous heads alone make images too
        out.append("image")
    return out


def input_modalities(pipe: Any) -> list[str]:
    toks = pipe.bundle.tokenizers
    return [m for m in ("text", "timeseries") if m in toks] + ["token_ids"]


def model_info(pipe: Any) -> pb.ModelInfo:
    cfg, limits = pipe.bundle.model.config, pipe.limits
    inputs = [MODALITY_ENUMS["tokens" if m == "token_ids" else m] for m in input_modalities(pipe)]
    return pb.ModelInfo(
        name=pipe.name,
        output_modalities=[MODALITY_ENUMS[m] for m in output_modalities(pipe)],
        input_modalities=inputs,
        parameters=pipe.bundle.model.num_parameters(),
        max_seq_len=cfg.max_seq_len,
        vocab_size=cfg.vocab_size,
        limits=pb.Limits(
            max_prompt_tokens=limits.max_prompt_tokens,
            max_output_tokens=limits.max_output_tokens,
            timeseries_context_length=limits.timeseries_context_length,
            timeseries_max_horizon=limits.timeseries_max_horizon,
            timeseries_max_samples=limits.timeseries_max_samples,
            max_image_pixels=limits.max_image_pixels,
            max_audio_seconds=limits.max_audio_seconds,
        ),
    )


def tokenize(request: pb.TokenizeRequest, pipe: Any) -> pb.TokenizeResponse:
    """One part -> its global ids (text: no <bos>; a series: every value, with its scale)."""
    part = prompt_part(request.part, "part", pipe)
    vocab = pipe.vocab
    if isinstance(part, TokenIdsPart):
        return pb.TokenizeResponse(ids=part.ids)
    if isinstance(part, TextPart):
        return pb.TokenizeResponse(ids=sequence.text_ids(vocab, pipe.tokenizer("text"), part.text))
    encoded = pipe.tokenizer("timeseries").encode(part.values)
    ids = sequence.global_ids(vocab, "timeseries", encoded.codes)
    return pb.TokenizeResponse(ids=ids, scale=encoded.state["scale"])


def detokenize(request: pb.DetokenizeRequest, pipe: Any) -> pb.DetokenizeResponse:
    """Global ids of one modality -> text, or series values (NaN for PAD/EOS codes)."""
    modality = MODALITY_NAMES.get(request.modality)
    toks = pipe.bundle.tokenizers
    if modality not in ("text", "timeseries") or modality not in toks:
        can = [f"MODALITY_{m.upper()}" for m in ("text", "timeseries") if m in toks]
        got = pb.Modality.Name(request.modality) if modality else str(request.modality)
        if request.modality == pb.MODALITY_UNSPECIFIED:
            got = "no modality"
        raise InvalidArgument(f"modality: this model detokenizes {' or '.join(can)}, got {got}")
    span = pipe.vocab.range(modality)
    for j, i in enumerate(request.ids):
        if not span.start <= i < span.stop:
            raise InvalidArgument(
                f"ids[{j}]: {i} is not a {modality} id (they lie in [{span.start}, {span.stop}))"
            )
    codes = torch.tensor(list(request.ids), dtype=torch.long) - span.start  # codes: [T]
    tok = pipe.tokenizer(modality)
    if modality == "text":
        return pb.DetokenizeResponse(text=tok.decode(codes))
    if not (math.isfinite(request.scale) and request.scale > 0):
        raise InvalidArgument(
            f"scale must be the positive scale Tokenize returned, got {request.scale}"
        )
    values = tok.decode(codes, {"scale": request.scale}).tolist()
    return pb.DetokenizeResponse(timeseries=pb.TimeSeriesInput(values=values))


# -- responses ----------------------------------------------------------------------


def chunk_response(chunk: Any, args: GenerateArgs, request_id: str) -> pb.GenerateResponse:
    """One pipeline chunk (TextDelta, TokensDelta, SeriesStep) -> a GenerateResponse."""
    if isinstance(chunk, TextDelta):
        return pb.GenerateResponse(request_id=request_id, text=pb.TextChunk(delta=chunk.text))
    if isinstance(chunk, TokensDelta):
        lps = chunk.logprobs if args.logprobs else ()
        tokens = pb.TokensChunk(ids=chunk.ids, logprobs=lps)
        return pb.GenerateResponse(request_id=request_id, tokens=tokens)
    if isinstance(chunk, SeriesStep):
        levels = list(chunk.quantiles)
        series = pb.SeriesChunk(
            step=chunk.step,
            median=chunk.median,
            quantile_levels=levels,
            quantile_values=[chunk.quantiles[q] for q in levels],
            samples=np.asarray(chunk.values, dtype=np.float64).tolist()
            if args.return_samples
            else (),
        )
        return pb.GenerateResponse(request_id=request_id, series=series)
    if isinstance(chunk, ImageStep):
        image = pb.ImageChunk(
            png=chunk.png(),
            rows_done=chunk.rows_done,
            total_rows=chunk.total_rows,
            final=chunk.final,
        )
        return pb.GenerateResponse(request_id=request_id, image=image)
    if isinstance(chunk, AudioChunk):
        audio = pb.AudioChunk(
            pcm=chunk.pcm16(), sample_rate=chunk.sample_rate, first_sample=chunk.first_sample
        )
        return pb.GenerateResponse(request_id=request_id, audio=audio)
    raise TypeError(f"unexpected pipeline chunk {type(chunk).__name__}")


def final_response(
    result: GenerationOutput,
    request_id: str,
    queue_seconds: float,
    first_chunk_seconds: float,
    total_seconds: float,
) -> pb.GenerateResponse:
    final = pb.Final(
        finish_reason=FINISH_REASONS.get(result.finish_reason, pb.FINISH_REASON_UNSPECIFIED),
        usage=pb.Usage(prompt_tokens=result.prompt_tokens, output_tokens=result.output_tokens),
        timings=pb.Timings(
            queue_seconds=queue_seconds,
            first_chunk_seconds=first_chunk_seconds,
            total_seconds=total_seconds,
        ),
    )
    return pb.GenerateResponse(request_id=request_id, final=final)
