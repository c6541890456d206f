"""The Python SDK for an mmntp server: typed, streamed generation over gRPC.

    from mmntp.client import Client
    from mmntp.api import TextOutput

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
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmntp.api import *  # noqa: F403 - the API's types are the SDK's surface
from mmntp.api import Chunk, ForecastResult, ModelInfo, SamplingParams, TextChunk, TextOutput
from mmntp.api import __all__ as _API
from mmntp.api.outputs import DEFAULT_QUANTILES
from mmntp.client.batches import BatchJob, BatchResult, batch_job, batch_result, create_messages
from mmntp.client.messages import (
    ForecastCollector,
    build_request,
    chunks_of,
    forecast_request,
    model_info,
)
from mmntp.client.save import (
    save_forecast_csv,
    save_forecast_json,
    save_image,
    save_png,
    save_wav,
)
from mmntp.v1 import batch_pb2 as bpb
from mmntp.v1 import batch_pb2_grpc, generation_pb2_grpc
from mmntp.v1 import generation_pb2 as pb

__all__ = [
    *_API,
    "AsyncClient",
    "BatchJob",
    "BatchResult",
    "Client",
    "ClientError",
    "build_request",
    "save_forecast_csv",
    "save_forecast_json",
    "save_image",
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
        self._batches = batch_pb2_grpc.BatchServiceStub(self._channel)
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
                    yield from chunks_of(response)
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
        num_samples: int | None = None,  # None: the server's default (DEFAULT_NUM_SAMPLES)
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        seed: int | None = None,
        *,
        sampling: SamplingParams | None = None,
        timeout: float | None = None,
        return_samples: bool = False,
        head: str | None = None,
    ) -> ForecastResult:
        """Forecast `horizon` steps after `values` (shaped (time_length,), NaN = missing).

        `seed` alone keeps the server's forecasting sampling (temperature 1, top-k 50);
        `head` "tokens" or "patch" (None: the served model's default).
        """
        part, output, params = forecast_request(
            values, horizon, num_samples, quantiles, seed, sampling, head
        )
        collector = ForecastCollector()
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
        return [model_info(m) for m in response.models]

    # -- batch jobs (BatchService) ----------------------------------------------------

    def submit_batch(
        self,
        source: str | Path | Sequence[str | bytes],
        *,
        name: str = "",
        timeout: float | None = None,
    ) -> BatchJob:
        """Send a JSONL batch (a file's path or its lines); the server checks every line
        before it keeps the batch. `name` makes a retry safe: the server answers a second
        submission of the same name with the first one's batch. Not re-sent by itself."""
        try:
            message = self._batches.CreateBatch(
                create_messages(source, name),
                timeout=self._attempts(timeout).time_left(),
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            raise _client_error(err) from None
        return batch_job(message)

    def get_batch(self, batch_id: str, *, timeout: float | None = None) -> BatchJob:
        request = bpb.GetBatchRequest(id=batch_id)
        return batch_job(self._unary(self._batches.GetBatch, request, timeout))

    def list_batches(self, *, timeout: float | None = None) -> list[BatchJob]:
        """The batches the server keeps, newest first."""
        response = self._unary(self._batches.ListBatches, bpb.ListBatchesRequest(), timeout)
        return [batch_job(b) for b in response.batches]

    def cancel_batch(self, batch_id: str, *, timeout: float | None = None) -> BatchJob:
        """Stop a batch; its requests without a result end with status "cancelled"."""
        request = bpb.CancelBatchRequest(id=batch_id)
        return batch_job(self._unary(self._batches.CancelBatch, request, timeout))

    def batch_results(
        self, batch_id: str, *, timeout: float | None = None
    ) -> Iterator[BatchResult]:
        """The results written so far (all of them once the batch has ended)."""
        call = self._batches.GetBatchResults(
            bpb.GetBatchResultsRequest(id=batch_id),
            timeout=self._attempts(timeout).time_left(),
            metadata=self._metadata,
        )
        try:
            for message in call:
                yield batch_result(message)
        except grpc.RpcError as err:
            raise _client_error(err) from None
        finally:
            call.cancel()


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
            self._batches = batch_pb2_grpc.BatchServiceStub(self._channel)
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
                    for chunk in chunks_of(response):
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
        num_samples: int | None = None,  # None: the server's default (DEFAULT_NUM_SAMPLES)
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        seed: int | None = None,
        *,
        sampling: SamplingParams | None = None,
        timeout: float | None = None,
        return_samples: bool = False,
        head: str | None = None,
    ) -> ForecastResult:
        """Forecast `horizon` steps after `values` (see Client.forecast)."""
        part, output, params = forecast_request(
            values, horizon, num_samples, quantiles, seed, sampling, head
        )
        collector = ForecastCollector()
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
        return [model_info(m) for m in response.models]

    # -- batch jobs (BatchService; see Client) -----------------------------------------

    async def submit_batch(
        self,
        source: str | Path | Sequence[str | bytes],
        *,
        name: str = "",
        timeout: float | None = None,
    ) -> BatchJob:
        """Send a JSONL batch (a path or lines); see Client.submit_batch."""
        self._open()
        try:
            message = await self._batches.CreateBatch(
                create_messages(source, name),
                timeout=self._attempts(timeout).time_left(),
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            raise _client_error(err) from None
        return batch_job(message)

    async def get_batch(self, batch_id: str, *, timeout: float | None = None) -> BatchJob:
        self._open()
        request = bpb.GetBatchRequest(id=batch_id)
        return batch_job(await self._unary(self._batches.GetBatch, request, timeout))

    async def list_batches(self, *, timeout: float | None = None) -> list[BatchJob]:
        self._open()
        request = bpb.ListBatchesRequest()
        response = await self._unary(self._batches.ListBatches, request, timeout)
        return [batch_job(b) for b in response.batches]

    async def cancel_batch(self, batch_id: str, *, timeout: float | None = None) -> BatchJob:
        self._open()
        request = bpb.CancelBatchRequest(id=batch_id)
        return batch_job(await self._unary(self._batches.CancelBatch, request, timeout))

    async def batch_results(
        self, batch_id: str, *, timeout: float | None = None
    ) -> AsyncIterator[BatchResult]:
        """The results written so far (all of them once the batch has ended)."""
        self._open()
        call = self._batches.GetBatchResults(
            bpb.GetBatchResultsRequest(id=batch_id),
            timeout=self._attempts(timeout).time_left(),
            metadata=self._metadata,
        )
        try:
            async for message in call:
                yield batch_result(message)
        except grpc.RpcError as err:
            raise _client_error(err) from None
        finally:
            call.cancel()
