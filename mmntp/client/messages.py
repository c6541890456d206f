"""The SDK's wire form: api requests -> proto messages, proto responses -> api chunks."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from mmntp.api import (
    AudioChunk,
    AudioOutput,
    AudioPart,
    Chunk,
    Final,
    ForecastResult,
    ImageChunk,
    ImageOutput,
    ImagePart,
    ModelInfo,
    MotionChunk,
    MotionOutput,
    MotionPart,
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

_UINT64_MAX = 2**64 - 1


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
            head=output.head or "",
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
    """Proto sampling: a field left None (the modality's default) or equal to the proto's
    documented "unset" meaning stays unset, so the server fills exactly the defaults the
    local pipeline would fill for the same SamplingParams."""
    msg = pb.SamplingParams()
    if params is not None:
        if params.temperature is not None:
            msg.temperature = params.temperature
        if params.top_k is not None:
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


def forecast_request(
    values: Any,
    horizon: int,
    num_samples: int | None,
    quantiles: Sequence[float],
    seed: int | None,
    sampling: SamplingParams | None,
    head: str | None = None,
) -> tuple[TimeSeriesPart, TimeSeriesOutput, SamplingParams | None]:
    if seed is not None:
        sampling = dataclasses.replace(sampling or SamplingParams(), seed=seed)
    output = TimeSeriesOutput(horizon, num_samples, tuple(quantiles), head)
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
        m.step,
        m.median,
        dict(zip(m.quantile_levels, m.quantile_values)),
        np.asarray(m.samples, dtype=np.float64),
    ),
    "image": lambda m: ImageChunk(m.png, m.rows_done, m.total_rows, m.final),
    "audio": lambda m: AudioChunk.from_pcm16(m.pcm, m.sample_rate, m.first_sample),
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


def chunks_of(response: pb.GenerateResponse) -> Iterator[Chunk]:
    """The typed chunks of one response: its chunk (if any), then Final on the last one."""
    kind = response.WhichOneof("chunk")
    if kind is not None:
        yield _CONVERT[kind](getattr(response, kind))
    if response.HasField("final"):
        yield _final(response.final, response.request_id)


def model_info(m: pb.ModelInfo) -> ModelInfo:
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


class ForecastCollector:
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
        if steps and len(steps[0].samples):
            samples = np.array([c.samples for c in steps], dtype=np.float64).T  # [paths, steps]
        median = np.array([c.median for c in steps], dtype=np.float64)
        return ForecastResult(median, quantiles, len(steps), samples, self.final)
