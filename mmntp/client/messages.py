"""The SDK's data: prompt parts and output specs, typed chunks, and their wire form."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmntp.model.sampling import SamplingParams
from mmntp.schema import (
    FORECAST_SAMPLING,
    AudioOutput,
    ImageOutput,
    TextOutput,
    TextPart,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensOutput,
)
from mmntp.v1 import generation_pb2 as pb

_UINT64_MAX = 2**64 - 1


# -- client-side prompt parts and output specs (text, ids and series come from schema) --


@dataclass
class ImagePart:
    """An image prompt: PNG or JPEG file bytes."""

    data: bytes


@dataclass
class AudioPart:
    """An audio prompt: a WAV file, or signed 16-bit little-endian mono PCM at sample_rate."""

    wav: bytes | None = None
    pcm: bytes | None = None
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if (self.wav is None) == (self.pcm is None):
            raise ValueError("AudioPart needs exactly one of wav or pcm")
        if self.pcm is not None and self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 for pcm, got {self.sample_rate}")


@dataclass
class MotionPart:
    """A motion prompt shaped (frames, features)."""

    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.ndim != 2 or values.shape[1] == 0:
            raise ValueError(f"MotionPart.values must be (frames, features), got {values.shape}")


@dataclass
class MotionOutput:
    frames: int


# -- streamed chunks ---------------------------------------------------------------------


@dataclass(frozen=True)
class TextChunk:
    """New text since the previous chunk."""

    text: str


@dataclass(frozen=True)
class TokensChunk:
    """New raw token ids and their natural-log probabilities."""

    ids: list[int]
    logprobs: list[float]


@dataclass(frozen=True)
class SeriesChunk:
    """One forecast step: its median, quantiles by level and (if asked) every path's value."""

    step: int
    median: float
    quantiles: dict[float, float]
    samples: list[float]


@dataclass(frozen=True)
class ImageChunk:
    """PNG bytes: a preview (rows_done < total_rows) or, when `final`, the finished image."""

    png: bytes
    rows_done: int
    total_rows: int
    final: bool


@dataclass(frozen=True)
class AudioChunk:
    """Signed 16-bit little-endian mono PCM starting at sample `first_sample` of the output."""

    pcm: bytes
    sample_rate: int
    first_sample: int

    def samples(self) -> np.ndarray:
        """The PCM as int16 shaped (num_samples,)."""
        return np.frombuffer(self.pcm, dtype="<i2").astype(np.int16)


@dataclass(frozen=True)
class MotionChunk:
    """Frames from `first_frame` on: values shaped (frames, features)."""

    first_frame: int
    values: np.ndarray


@dataclass(frozen=True)
class Final:
    """The end of a stream: why it ended, token usage and the server's timings."""

    finish_reason: str  # "stop" | "length" | "abort" | "deadline" | "unspecified"
    prompt_tokens: int
    output_tokens: int
    queue_seconds: float
    first_chunk_seconds: float
    total_seconds: float
    request_id: str = ""


Chunk = TextChunk | TokensChunk | SeriesChunk | ImageChunk | AudioChunk | MotionChunk | Final


@dataclass
class ForecastResult:
    """A collected forecast: arrays shaped (steps,); `samples` (num_samples, steps) if asked."""

    median: np.ndarray
    quantiles: dict[float, np.ndarray]
    steps: int
    samples: np.ndarray | None = None
    final: Final | None = None


@dataclass
class ModelInfo:
    """One served model: modalities by name ("text", "timeseries", ...) and its limits."""

    name: str
    output_modalities: list[str]
    input_modalities: list[str]
    parameters: int
    max_seq_len: int
    vocab_size: int
    limits: dict[str, float] = field(default_factory=dict)


# -- requests --------------------------------------------------------------------------


def build_request(
    prompt: Any,
    output: Any,
    sampling: SamplingParams | None = None,
    *,
    guidance_scale: float | None = None,
    num_steps: int | None = None,
    priority: int = 0,
    request_id: str | None = None,
    model: str = "",
    return_samples: bool = False,
) -> pb.GenerateRequest:
    """The GenerateRequest for a prompt (str, one part or a list of parts) and output spec.

    `TokensOutput` always asks for log-probabilities (as the local pipeline returns them);
    `return_samples` asks a forecast to stream every sample path's value per step.
    """
    return pb.GenerateRequest(
        model=model,
        prompt=[_prompt_part(p, i) for i, p in enumerate(_as_parts(prompt))],
        output=_output_spec(output, return_samples),
        sampling=_sampling(sampling, guidance_scale, num_steps),
        priority=priority,
        request_id=request_id or "",
    )


def _as_parts(prompt: Any) -> list[Any]:
    if isinstance(prompt, str | TextPart | TokenIdsPart | TimeSeriesPart):
        return [prompt]
    if isinstance(prompt, ImagePart | AudioPart | MotionPart):
        return [prompt]
    if isinstance(prompt, Sequence):
        if not prompt:
            raise ValueError("prompt: empty prompt")
        return list(prompt)
    raise TypeError(f"prompt must be a str, a part or a list of parts, got {type(prompt).__name__}")


def _prompt_part(part: Any, index: int) -> pb.PromptPart:
    if isinstance(part, str):
        return pb.PromptPart(text=part)
    if isinstance(part, TextPart):
        return pb.PromptPart(text=part.text)
    if isinstance(part, TokenIdsPart):
        return pb.PromptPart(token_ids=pb.TokenIds(ids=[int(i) for i in part.ids]))
    if isinstance(part, TimeSeriesPart):
        values = np.asarray(part.values, dtype=np.float64)
        if values.ndim != 1:
            raise ValueError(f"prompt[{index}]: time series must be 1-D, got shape {values.shape}")
        return pb.PromptPart(
            timeseries=pb.TimeSeriesInput(
                values=values.tolist(), timestamps=list(part.timestamps or ())
            )
        )
    if isinstance(part, ImagePart):
        return pb.PromptPart(image=pb.ImageInput(data=bytes(part.data)))
    if isinstance(part, AudioPart):
        if part.wav is not None:
            return pb.PromptPart(audio=pb.AudioInput(wav=bytes(part.wav)))
        pcm = pb.PcmAudio(data=bytes(part.pcm), sample_rate=part.sample_rate)
        return pb.PromptPart(audio=pb.AudioInput(pcm=pcm))
    if isinstance(part, MotionPart):
        values = np.asarray(part.values, dtype=np.float32)  # values: [frames, features]
        return pb.PromptPart(
            motion=pb.MotionInput(num_features=values.shape[1], values=values.ravel().tolist())
        )
    raise TypeError(f"prompt[{index}]: unsupported part type {type(part).__name__}")


def _output_spec(output: Any, return_samples: bool) -> pb.OutputSpec:
    if isinstance(output, TextOutput):
        return pb.OutputSpec(text=pb.TextSpec(max_tokens=output.max_tokens))
    if isinstance(output, TokensOutput):
        spec = pb.TokensSpec(
            max_tokens=output.max_tokens, stop_ids=[int(i) for i in output.stop_ids], logprobs=True
        )
        return pb.OutputSpec(tokens=spec)
    if isinstance(output, TimeSeriesOutput):
        spec = pb.TimeSeriesSpec(
            horizon=output.horizon,
            num_samples=output.num_samples,
            quantiles=[float(q) for q in output.quantiles],
            return_samples=return_samples,
        )
        return pb.OutputSpec(timeseries=spec)
    if isinstance(output, ImageOutput):
        spec = pb.ImageSpec(
            width=output.width,
            height=output.height,
            head=output.head,
            preview_every_rows=output.preview_every_rows,
        )
        return pb.OutputSpec(image=spec)
    if isinstance(output, AudioOutput):
        return pb.OutputSpec(audio=pb.AudioSpec(seconds=output.seconds))
    if isinstance(output, MotionOutput):
        return pb.OutputSpec(motion=pb.MotionSpec(frames=output.frames))
    raise TypeError(f"output: unsupported output spec {type(output).__name__}")


def _sampling(
    params: SamplingParams | None, guidance_scale: float | None, num_steps: int | None
) -> pb.SamplingParams:
    """Proto sampling: fields equal to the proto's documented "unset" meaning stay unset.

    temperature and top_k are the exceptions: unset means the *modality's* default (top-k
    50 for forecasts, temperature 0.7 for audio), so a given SamplingParams always sends
    them; the request then samples exactly as the local pipeline would with the same
    SamplingParams.
    """
    msg = pb.SamplingParams()
    if params is not None:
        msg.temperature = params.temperature
        msg.top_k = params.top_k
        if params.top_p != 1.0:
            msg.top_p = params.top_p
        if params.min_p != 0.0:
            msg.min_p = params.min_p
        if params.repetition_penalty != 1.0:
            msg.repetition_penalty = params.repetition_penalty
        if params.seed is not None:
            if params.seed > _UINT64_MAX:
                raise ValueError(f"seed must fit in 64 bits, got {params.seed}")
            msg.seed = params.seed
        # Explicit keyword arguments win over the SamplingParams fields.
        guidance_scale = params.guidance_scale if guidance_scale is None else guidance_scale
        num_steps = params.num_steps if num_steps is None else num_steps
    if guidance_scale is not None:
        msg.guidance_scale = guidance_scale
    if num_steps is not None:
        msg.num_steps = num_steps
    return msg


def _forecast_request(
    values: Any,
    horizon: int,
    num_samples: int,
    quantiles: Sequence[float],
    seed: int | None,
    sampling: SamplingParams | None,
) -> tuple[TimeSeriesPart, TimeSeriesOutput, SamplingParams | None]:
    if seed is not None:
        sampling = dataclasses.replace(sampling or FORECAST_SAMPLING, seed=seed)
    output = TimeSeriesOutput(horizon=horizon, num_samples=num_samples, quantiles=tuple(quantiles))
    return TimeSeriesPart(values), output, sampling


# -- responses -------------------------------------------------------------------------


_FINISH = {
    pb.FINISH_REASON_UNSPECIFIED: "unspecified",
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_ABORT: "abort",
    pb.FINISH_REASON_DEADLINE: "deadline",
}


def _motion(m: pb.MotionChunk) -> MotionChunk:
    width = max(m.num_features, 1)
    values = np.asarray(m.values, dtype=np.float32).reshape(-1, width)  # [frames, features]
    return MotionChunk(m.first_frame, values)


_CONVERT: dict[str, Callable[[Any], Chunk]] = {
    "text": lambda m: TextChunk(m.delta),
    "tokens": lambda m: TokensChunk(list(m.ids), list(m.logprobs)),
    "series": lambda m: SeriesChunk(
        m.step, m.median, dict(zip(m.quantile_levels, m.quantile_values)), list(m.samples)
    ),
    "image": lambda m: ImageChunk(m.png, m.rows_done, m.total_rows, m.final),
    "audio": lambda m: AudioChunk(m.pcm, m.sample_rate, m.first_sample),
    "motion": _motion,
}


def _final(f: pb.Final, request_id: str) -> Final:
    return Final(
        finish_reason=_FINISH.get(f.finish_reason, "unspecified"),
        prompt_tokens=f.usage.prompt_tokens,
        output_tokens=f.usage.output_tokens,
        queue_seconds=f.timings.queue_seconds,
        first_chunk_seconds=f.timings.first_chunk_seconds,
        total_seconds=f.timings.total_seconds,
        request_id=request_id,
    )


def _chunks(response: pb.GenerateResponse) -> Iterator[Chunk]:
    """The typed chunks of one response: its chunk (if any), then Final on the last one."""
    kind = response.WhichOneof("chunk")
    if kind is not None:
        yield _CONVERT[kind](getattr(response, kind))
    if response.HasField("final"):
        yield _final(response.final, response.request_id)


def _model_info(m: pb.ModelInfo) -> ModelInfo:
    def names(values: Iterable[int]) -> list[str]:
        return [pb.Modality.Name(v).removeprefix("MODALITY_").lower() for v in values]

    limits = {f.name: getattr(m.limits, f.name) for f in m.limits.DESCRIPTOR.fields}
    return ModelInfo(
        m.name,
        names(m.output_modalities),
        names(m.input_modalities),
        m.parameters,
        m.max_seq_len,
        m.vocab_size,
        limits,
    )


class _ForecastCollector:
    """Accumulates SeriesChunks (in step order) into a ForecastResult."""

    def __init__(self) -> None:
        self.steps: list[SeriesChunk] = []
        self.final: Final | None = None

    def add(self, chunk: Chunk) -> None:
        if isinstance(chunk, SeriesChunk):
            self.steps.append(chunk)
        elif isinstance(chunk, Final):
            self.final = chunk

    def result(self) -> ForecastResult:
        steps = sorted(self.steps, key=lambda c: c.step)
        levels = sorted({q for c in steps for q in c.quantiles})
        quantiles = {q: np.array([c.quantiles[q] for c in steps], dtype=np.float64) for q in levels}
        samples = None
        if steps and steps[0].samples:
            samples = np.array([c.samples for c in steps], dtype=np.float64).T  # [paths, steps]
        median = np.array([c.median for c in steps], dtype=np.float64)
        return ForecastResult(median, quantiles, len(steps), samples, self.final)
