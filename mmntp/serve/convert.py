"""Proto <-> `mmntp.api`: the service's wire mapping and nothing else.

Requests map to api objects (prompt parts, an output spec, SamplingParams with unset
fields left None); the one validation step (`Pipeline.validate`) then checks them. The
little that only the wire can get wrong (a oneof left unset, motion values that do not
fill whole frames) raises `FieldError` here with the request path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmntp.api import (
    DEFAULT_QUANTILES,
    AudioChunk,
    AudioOutput,
    AudioPart,
    Chunk,
    FieldError,
    GenerationOutput,
    ImageChunk,
    ImageOutput,
    ImagePart,
    ModelInfo,
    MotionOutput,
    MotionPart,
    OutputSpec,
    PromptPart,
    SamplingParams,
    SeriesChunk,
    TextChunk,
    TextOutput,
    TextPart,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensChunk,
    TokensOutput,
)
from mmntp.v1 import generation_pb2 as pb

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


@dataclass
class GenerateArgs:
    """A GenerateRequest in api terms, plus what the stream must include."""

    prompt: list[PromptPart]
    output: OutputSpec
    sampling: SamplingParams
    logprobs: bool = False
    return_samples: bool = False


# -- requests ------------------------------------------------------------------------


def generate_args(request: pb.GenerateRequest) -> GenerateArgs:
    parts = [prompt_part(p, f"prompt[{i}]") for i, p in enumerate(request.prompt)]
    spec = request.output
    return GenerateArgs(
        parts,
        output_spec(spec),
        sampling_params(request.sampling),
        logprobs=spec.WhichOneof("spec") == "tokens" and spec.tokens.logprobs,
        return_samples=spec.WhichOneof("spec") == "timeseries" and spec.timeseries.return_samples,
    )


def prompt_part(part: pb.PromptPart, path: str) -> PromptPart:
    try:
        return _prompt_part(part)
    except FieldError as err:  # the api part's own checks name fields relative to it
        raise err.under(path) from None


def _prompt_part(part: pb.PromptPart) -> PromptPart:
    kind = part.WhichOneof("part")
    if kind is None:
        raise FieldError("", "no modality set (text, image, audio, ...)")
    if kind == "text":
        return TextPart(part.text)
    if kind == "token_ids":
        return TokenIdsPart(list(part.token_ids.ids))
    if kind == "timeseries":
        series = part.timeseries
        values = np.asarray(series.values, dtype=np.float64)
        return TimeSeriesPart(values, list(series.timestamps) or None)
    if kind == "image":
        return ImagePart(part.image.data)
    if kind == "audio":
        return _audio_part(part.audio)
    return _motion_part(part.motion)


def _audio_part(audio: pb.AudioInput) -> AudioPart:
    source = audio.WhichOneof("source")
    if source is None:
        raise FieldError("audio", "no audio given (wav or pcm)")
    if source == "wav":
        return AudioPart(wav=audio.wav)
    return AudioPart(pcm=audio.pcm.data, sample_rate=audio.pcm.sample_rate)


def _motion_part(motion: pb.MotionInput) -> MotionPart:
    if motion.num_features <= 0:
        raise FieldError(
            "motion.num_features", f"must be a positive integer, got {motion.num_features}"
        )
    n = len(motion.values)
    if n == 0 or n % motion.num_features:
        raise FieldError(
            "motion.values",
            f"{n} values is not a positive multiple of num_features {motion.num_features}",
        )
    values = np.asarray(motion.values, dtype=np.float32).reshape(-1, motion.num_features)
    return MotionPart(values)  # values: [frames, features]


def output_spec(spec: pb.OutputSpec) -> OutputSpec:
    """Proto ints of 0 mean "the default" (None in the api)."""
    kind = spec.WhichOneof("spec")
    if kind is None:
        raise FieldError("output", "no output spec given (text, timeseries, tokens, ...)")
    if kind == "text":
        return TextOutput(spec.text.max_tokens or None)
    if kind == "tokens":
        return TokensOutput(spec.tokens.max_tokens or None, tuple(spec.tokens.stop_ids))
    if kind == "timeseries":
        ts = spec.timeseries
        return TimeSeriesOutput(
            ts.horizon,
            ts.num_samples or None,
            tuple(ts.quantiles) or DEFAULT_QUANTILES,
            ts.head or None,
        )
    if kind == "image":
        image = spec.image
        return ImageOutput(image.width, image.height, image.head or "vq", image.preview_every_rows)
    if kind == "audio":
        return AudioOutput(seconds=float(spec.audio.seconds))
    return MotionOutput(spec.motion.frames)


_SAMPLING_FIELDS = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "seed",
    "guidance_scale",
    "num_steps",
)


def sampling_params(msg: pb.SamplingParams) -> SamplingParams:
    """Proto sampling -> SamplingParams: an unset field stays unset (None, or the field's
    neutral value), and the validation step fills the output modality's defaults."""
    values = {name: getattr(msg, name) for name in _SAMPLING_FIELDS if msg.HasField(name)}
    for name in ("temperature", "top_p", "min_p", "repetition_penalty", "guidance_scale"):
        if name in values:
            values[name] = float(values[name])
    try:
        return SamplingParams(**values)
    except FieldError as err:
        raise err.under("sampling") from None


# -- ListModels / Tokenize / Detokenize --------------------------------------------------


def model_info(info: ModelInfo) -> pb.ModelInfo:
    def enum(m: str) -> int:
        return MODALITY_ENUMS["tokens" if m == "token_ids" else m]

    return pb.ModelInfo(
        name=info.name,
        output_modalities=[enum(m) for m in info.output_modalities],
        input_modalities=[enum(m) for m in info.input_modalities],
        parameters=info.parameters,
        max_seq_len=info.max_seq_len,
        vocab_size=info.vocab_size,
        limits=pb.Limits(**{f.name: info.limits[f.name] for f in pb.Limits.DESCRIPTOR.fields}),
    )


def tokenize(request: pb.TokenizeRequest, pipe) -> pb.TokenizeResponse:
    ids, scale = pipe.tokenize(prompt_part(request.part, "part"))
    return pb.TokenizeResponse(ids=ids, scale=scale or 0.0)


def detokenize(request: pb.DetokenizeRequest, pipe) -> pb.DetokenizeResponse:
    modality = MODALITY_NAMES.get(request.modality)
    if request.modality == pb.MODALITY_UNSPECIFIED:
        got = "no modality"
    else:
        got = pb.Modality.Name(request.modality) if modality else str(request.modality)
    out = pipe.detokenize(modality, list(request.ids), request.scale, got=got)
    if isinstance(out, str):
        return pb.DetokenizeResponse(text=out)
    return pb.DetokenizeResponse(timeseries=pb.TimeSeriesInput(values=out))


# -- responses ----------------------------------------------------------------------


def chunk_response(chunk: Chunk, args: GenerateArgs, request_id: str) -> pb.GenerateResponse:
    """One pipeline chunk (TextChunk, TokensChunk, SeriesChunk) -> a GenerateResponse."""
    if isinstance(chunk, TextChunk):
        return pb.GenerateResponse(request_id=request_id, text=pb.TextChunk(delta=chunk.text))
    if isinstance(chunk, TokensChunk):
        lps = chunk.logprobs if args.logprobs else ()
        tokens = pb.TokensChunk(ids=chunk.ids, logprobs=lps)
        return pb.GenerateResponse(request_id=request_id, tokens=tokens)
    if isinstance(chunk, SeriesChunk):
        levels = list(chunk.quantiles)
        series = pb.SeriesChunk(
            step=chunk.step,
            median=chunk.median,
            quantile_levels=levels,
            quantile_values=[chunk.quantiles[q] for q in levels],
            samples=np.asarray(chunk.samples, dtype=np.float64).tolist()
            if args.return_samples
            else (),
        )
        return pb.GenerateResponse(request_id=request_id, series=series)
    if isinstance(chunk, ImageChunk):
        image = pb.ImageChunk(
            png=chunk.png,
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
