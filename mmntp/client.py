"""The Python SDK for an mmntp server: typed, streamed generation over gRPC.

    from mmntp.client import Client
    from mmntp.schema import TextOutput

    with Client("localhost:50051", api_key="...", timeout=30) as client:
        for chunk in client.generate("Once upon a time", TextOutput(max_tokens=64)):
            print(chunk)
        forecast = client.forecast(values, horizon=12)

`Client` is synchronous; `AsyncClient` has the same surface on `grpc.aio` (its
`generate` returns an async iterator, every other method is a coroutine).

Every call carries `authorization: Bearer KEY` when an API key is set, and a deadline when
a timeout is set (per call, else the client's). A call that fails with UNAVAILABLE before
any response arrived is re-sent up to `retries` times with exponential backoff inside the
same deadline; a stream that already produced output is never re-sent. Every other failure
raises `ClientError` at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmntp.data.series_io import write_forecast_csv
from mmntp.model.sampling import SamplingParams
from mmntp.schema import (
    DEFAULT_QUANTILES,
    FORECAST_SAMPLING,
    ImageOutput,
    TextOutput,
    TextPart,
    TimeSeriesOutput,
    TimeSeriesPart,
    TokenIdsPart,
    TokensOutput,
)
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

__all__ = [
    "AsyncClient",
    "AudioChunk",
    "AudioOutput",
    "AudioPart",
    "Client",
    "ClientError",
    "Final",
    "ForecastResult",
    "ImageChunk",
    "ImageOutput",
    "ImagePart",
    "ModelInfo",
    "MotionChunk",
    "MotionOutput",
    "MotionPart",
    "SeriesChunk",
    "TextChunk",
    "TokensChunk",
    "build_request",
    "save_forecast_csv",
    "save_png",
    "save_wav",
]

# Image and audio chunks can be large; the gRPC default receive limit is 4 MiB.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
)
_UINT64_MAX = 2**64 - 1


class ClientError(Exception):
    """A call that failed: `code` is the grpc.StatusCode, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _client_error(err: grpc.RpcError) -> ClientError:
    return ClientError(err.code(), err.details() or "")


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
class AudioOutput:
    seconds: float


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

    top_k is the exception: unset means the *modality's* default (50 for forecasts) while
    SamplingParams' 0 means off, so a given SamplingParams always sends it; the request
    then samples exactly as the local pipeline would with the same SamplingParams.
    """
    msg = pb.SamplingParams()
    if params is not None:
        if params.temperature != 1.0:
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


# -- deadlines and retries -------------------------------------------------------------


class _Attempts:
    """One logical call's deadline and retry budget: every attempt gets the time left."""

    def __init__(self, timeout: float | None, retries: int, backoff: float) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.retries, self.backoff, self.done = retries, backoff, 0

    def time_left(self) -> float | None:
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ClientError(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed while retrying")
        return left

    def retry_delay(self, err: grpc.RpcError, received: bool) -> float | None:
        """Seconds to wait before re-sending, or None to give up (and raise)."""
        if err.code() != grpc.StatusCode.UNAVAILABLE or received or self.done >= self.retries:
            return None
        base = self.backoff * 2**self.done
        delay = base / 2 + random.uniform(0, base / 2)  # jitter spreads out reconnect storms
        self.done += 1
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            return None
        return delay


def _credentials(tls_ca: str | Path | bytes | None) -> grpc.ChannelCredentials | None:
    if tls_ca is None:
        return None
    root = tls_ca if isinstance(tls_ca, bytes) else Path(tls_ca).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=root)


class _Base:
    def __init__(
        self,
        target: str,
        api_key: str | None = None,
        tls_ca: str | Path | bytes | None = None,
        timeout: float | None = None,
        retries: int = 3,
        backoff: float = 0.2,
        *,
        model: str = "",
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {backoff}")
        self.target, self.timeout, self.retries, self.backoff = target, timeout, retries, backoff
        self.model = model
        self._creds = _credentials(tls_ca)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()

    def _attempts(self, timeout: float | None) -> _Attempts:
        return _Attempts(self.timeout if timeout is None else timeout, self.retries, self.backoff)

    def _request(self, prompt, output, sampling, **kwargs) -> pb.GenerateRequest:
        return build_request(prompt, output, sampling, model=self.model, **kwargs)


class Client(_Base):
    """A synchronous client on one gRPC channel. `retries` counts re-sends after the first try.

    `tls_ca` (a PEM path or bytes) switches to TLS trusting that CA; `timeout` is the
    default deadline in seconds of every call (None = no deadline); `model` picks the
    served model (empty = the server's only one).
    """

    def __init__(self, target: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        if self._creds is None:
            self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(target, self._creds, options=CHANNEL_OPTIONS)
        self._stub = generation_pb2_grpc.GenerationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def generate(
        self,
        prompt: Any,
        output: Any,
        sampling: SamplingParams | None = None,
        *,
        timeout: float | None = None,
        priority: int = 0,
        request_id: str | None = None,
        guidance_scale: float | None = None,
        num_steps: int | None = None,
        return_samples: bool = False,
    ) -> Iterator[Chunk]:
        """Typed chunks as the server streams them, ending with `Final`.

        The request is built (and checked) now; it is sent when iteration starts. Leaving
        the loop early cancels the call on the server.
        """
        request = self._request(
            prompt,
            output,
            sampling,
            guidance_scale=guidance_scale,
            num_steps=num_steps,
            priority=priority,
            request_id=request_id,
            return_samples=return_samples,
        )
        return self._stream(request, timeout)

    def _stream(self, request: pb.GenerateRequest, timeout: float | None) -> Iterator[Chunk]:
        attempts = self._attempts(timeout)
        while True:
            call = self._stub.Generate(
                request, timeout=attempts.time_left(), metadata=self._metadata
            )
            received = False
            try:
                for response in call:
                    received = True
                    yield from _chunks(response)
                return
            except grpc.RpcError as err:
                delay = attempts.retry_delay(err, received)
                if delay is None:
                    raise _client_error(err) from None
            finally:
                call.cancel()  # a no-op once the stream has ended
            time.sleep(delay)

    def _unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        attempts = self._attempts(timeout)
        while True:
            try:
                return method(request, timeout=attempts.time_left(), metadata=self._metadata)
            except grpc.RpcError as err:
                delay = attempts.retry_delay(err, received=False)
                if delay is None:
                    raise _client_error(err) from None
            time.sleep(delay)

    def forecast(
        self,
        values: Sequence[float] | np.ndarray,
        horizon: int,
        num_samples: int = 20,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        seed: int | None = None,
        *,
        sampling: SamplingParams | None = None,
        timeout: float | None = None,
        return_samples: bool = False,
    ) -> ForecastResult:
        """Forecast `horizon` steps after `values` (shaped (time_length,), NaN = missing).

        `seed` alone keeps the server's forecasting sampling (temperature 1, top-k 50).
        """
        part, output, params = _forecast_request(
            values, horizon, num_samples, quantiles, seed, sampling
        )
        collector = _ForecastCollector()
        for chunk in self.generate(
            part, output, params, timeout=timeout, return_samples=return_samples
        ):
            collector.add(chunk)
        return collector.result()

    def complete(
        self,
        text: str,
        max_tokens: int = 256,
        sampling: SamplingParams | None = None,
        *,
        timeout: float | None = None,
    ) -> str:
        """The generated continuation of `text`."""
        chunks = self.generate(text, TextOutput(max_tokens=max_tokens), sampling, timeout=timeout)
        return "".join(c.text for c in chunks if isinstance(c, TextChunk))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The grpc.health.v1 status of `service` ("" = the whole server), e.g. "SERVING"."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._unary(self._health.Check, request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        response = self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [_model_info(m) for m in response.models]


class AsyncClient(_Base):
    """`Client` on grpc.aio: `generate` is an async iterator, the rest are coroutines.

    The channel opens on the first call, inside the running event loop.
    """

    def __init__(self, target: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(target, *args, **kwargs)
        self._channel: grpc.aio.Channel | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            if self._creds is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.secure_channel(
                    self.target, self._creds, options=CHANNEL_OPTIONS
                )
            self._stub = generation_pb2_grpc.GenerationServiceStub(self._channel)
            self._health = health_pb2_grpc.HealthStub(self._channel)
        return self._channel

    async def __aenter__(self) -> AsyncClient:
        self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def generate(
        self,
        prompt: Any,
        output: Any,
        sampling: SamplingParams | None = None,
        *,
        timeout: float | None = None,
        priority: int = 0,
        request_id: str | None = None,
        guidance_scale: float | None = None,
        num_steps: int | None = None,
        return_samples: bool = False,
    ) -> AsyncIterator[Chunk]:
        """Typed chunks as the server streams them, ending with `Final` (see Client.generate)."""
        request = self._request(
            prompt,
            output,
            sampling,
            guidance_scale=guidance_scale,
            num_steps=num_steps,
            priority=priority,
            request_id=request_id,
            return_samples=return_samples,
        )
        return self._stream(request, timeout)

    async def _stream(
        self, request: pb.GenerateRequest, timeout: float | None
    ) -> AsyncIterator[Chunk]:
        self._open()
        attempts = self._attempts(timeout)
        while True:
            call = self._stub.Generate(
                request, timeout=attempts.time_left(), metadata=self._metadata
            )
            received = False
            try:
                async for response in call:
                    received = True
                    for chunk in _chunks(response):
                        yield chunk
                return
            except grpc.RpcError as err:
                delay = attempts.retry_delay(err, received)
                if delay is None:
                    raise _client_error(err) from None
            finally:
                call.cancel()
            await asyncio.sleep(delay)

    async def _unary(self, method: Callable[..., Any], request: Any, timeout: float | None) -> Any:
        attempts = self._attempts(timeout)
        while True:
            try:
                return await method(request, timeout=attempts.time_left(), metadata=self._metadata)
            except grpc.RpcError as err:
                delay = attempts.retry_delay(err, received=False)
                if delay is None:
                    raise _client_error(err) from None
            await asyncio.sleep(delay)

    async def forecast(
        self,
        values: Sequence[float] | np.ndarray,
        horizon: int,
        num_samples: int = 20,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        seed: int | None = None,
        *,
        sampling: SamplingParams | None = None,
        timeout: float | None = None,
        return_samples: bool = False,
    ) -> ForecastResult:
        """Forecast `horizon` steps after `values` (see Client.forecast)."""
        part, output, params = _forecast_request(
            values, horizon, num_samples, quantiles, seed, sampling
        )
        collector = _ForecastCollector()
        async for chunk in self.generate(
            part, output, params, timeout=timeout, return_samples=return_samples
        ):
            collector.add(chunk)
        return collector.result()

    async def complete(
        self,
        text: str,
        max_tokens: int = 256,
        sampling: SamplingParams | None = None,
        *,
        timeout: float | None = None,
    ) -> str:
        parts = []
        async for chunk in self.generate(
            text, TextOutput(max_tokens=max_tokens), sampling, timeout=timeout
        ):
            if isinstance(chunk, TextChunk):
                parts.append(chunk.text)
        return "".join(parts)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        self._open()
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._unary(self._health.Check, request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def list_models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        self._open()
        response = await self._unary(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [_model_info(m) for m in response.models]


# -- saving results ----------------------------------------------------------------------


def save_png(chunks_or_bytes: bytes | Iterable[Chunk], path: str | Path) -> Path:
    """Write PNG bytes, or the final ImageChunk of a stream (else its last preview)."""
    if isinstance(chunks_or_bytes, bytes | bytearray):
        data = bytes(chunks_or_bytes)
    else:
        images = [c for c in chunks_or_bytes if isinstance(c, ImageChunk)]
        if not images:
            raise ValueError("save_png: no ImageChunk in the stream")
        finals = [c for c in images if c.final]
        data = (finals or images)[-1].png
    path = Path(path)
    path.write_bytes(data)
    return path


def save_wav(audio_chunks: Iterable[Chunk], path: str | Path) -> Path:
    """Write the AudioChunks of a stream (in first_sample order) as 16-bit PCM WAV."""
    import soundfile

    chunks = sorted(
        (c for c in audio_chunks if isinstance(c, AudioChunk)), key=lambda c: c.first_sample
    )
    if not chunks:
        raise ValueError("save_wav: no AudioChunk in the stream")
    rates = {c.sample_rate for c in chunks}
    if len(rates) != 1:
        raise ValueError(f"save_wav: chunks have different sample rates {sorted(rates)}")
    expected = chunks[0].first_sample
    for c in chunks:
        if c.first_sample != expected:
            raise ValueError(
                f"save_wav: chunk at sample {c.first_sample} does not follow sample {expected}"
            )
        expected += len(c.pcm) // 2
    samples = np.concatenate([c.samples() for c in chunks])  # samples: [num_samples]
    path = Path(path)
    soundfile.write(path, samples, rates.pop(), subtype="PCM_16", format="WAV")
    return path


def save_forecast_csv(
    result: ForecastResult, path: str | Path, timestamps: list[str] | None = None
) -> Path:
    """Write a forecast as `mmntp generate -o` does: `[timestamp,]median,q0.1,...`."""
    write_forecast_csv(path, result.median, result.quantiles, timestamps)
    return Path(path)
