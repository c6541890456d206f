"""Generate without a transport: admission, the one validation step, the engine stream,
metrics. gRPC (servicer.py) and HTTP (http_api.py) run this same code and differ only in
how they read a request and how they report its outcome.

A call ends in a `Failure` (None for success) whose `code` is a gRPC status name:
INVALID_ARGUMENT (a `FieldError`, naming the field), RESOURCE_EXHAUSTED (a key's quota or
the engine's full queue, with `retry_after`), DEADLINE_EXCEEDED (the call's deadline, or a
client that read nothing for idle_stream_seconds), CANCELLED (the client left), UNAVAILABLE
(the engine died) or INTERNAL. A transport raises `ClientGone` from its `send` when the
client has left and `core` never tells such a client anything: the failure is only logged
and counted. Closing the engine stream (what every way out does) aborts the call's engine
requests within one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mmntp.api import FieldError, GenerationOutput
from mmntp.engine import QueueFullError
from mmntp.engine.async_engine import EngineFailedError
from mmntp.generation.pipeline import Usage
from mmntp.generation.validate import check_request_id
from mmntp.serve import convert
from mmntp.serve.metrics import RequestRecord, ServiceMetrics
from mmntp.serve.quotas import Admission, AdmissionConfig, KeyPolicy, QuotaExceeded, key_id
from mmntp.v1 import generation_pb2 as pb

log = logging.getLogger("mmntp.serve.servicer")

Send = Callable[[pb.GenerateResponse], Awaitable[None]]


@dataclass(frozen=True)
class Failure:
    """How a call failed, for its transport to report (see the module docstring)."""

    code: str  # a gRPC status name
    message: str
    field: str | None = None  # the request field at fault (INVALID_ARGUMENT)
    retry_after: float | None = None  # seconds (RESOURCE_EXHAUSTED)
    client_gone: bool = False  # nobody is left to tell


class ClientGone(Exception):
    """Raised by a transport's send: the client has left (cancelled, expired, closed)."""


class _IdleStream(Exception):
    """The client has not read a response for idle_stream_seconds."""


class GenerateCore:
    """One model's Generate (and the model check of every method) over `pipe.astream`."""

    def __init__(
        self, pipe: Any, metrics: ServiceMetrics, admission: AdmissionConfig | None = None
    ) -> None:
        self.pipe, self.metrics = pipe, metrics
        # The key policies: given, else the file named by $MMNTP_KEY_POLICIES, else defaults.
        self.admission = Admission(admission or AdmissionConfig.from_env())

    def check_model(self, name: str) -> None:
        if name and name != self.pipe.name:
            raise FieldError(
                "model", f"unknown model {name!r} (this server serves {self.pipe.name!r})"
            )

    async def unary(self, fn: Callable[[Any, Any], Any], request: Any) -> Any:
        """Tokenize / Detokenize: the model check, then `fn` off the loop (CPU work)."""
        self.check_model(request.model)
        return await asyncio.to_thread(fn, request, self.pipe)

    async def run(
        self, request: pb.GenerateRequest, token: str | None, deadline: float | None, send: Send
    ) -> Failure | None:
        """Admit, validate and stream `request`'s responses through `send`.

        `token`: the caller's API key (the transport has authenticated it); `deadline`: a
        time.monotonic() instant or None. Raises CancelledError when the caller's task is
        cancelled (after recording it), else returns how the call failed, or None.
        """
        modality = request.output.WhichOneof("spec") or "unknown"
        record = self.metrics.track(request.request_id or uuid.uuid4().hex, modality)
        record.key = key_id(token)
        status, admitted = "OK", False
        try:
            policy = self.admission.admit(record.key)
            admitted = True
            responses = self._generate(request, deadline, record, policy)
            # Not the loop's deadline alone: the engine ends its rows at the same instant,
            # and this ends the call even while it waits for the engine or the client.
            async with asyncio.timeout_at(deadline), contextlib.aclosing(responses):
                async for response in responses:  # closing `responses` frees the engine
                    await self._write(send, response)
                    record.sent()
            return None
        except asyncio.CancelledError:
            status = "DEADLINE_EXCEEDED" if _expired(deadline) else "CANCELLED"
            raise
        except Exception as err:
            failure = self._failure(err, record, deadline)
            status = failure.code
            return failure
        finally:
            if admitted:
                self.admission.release(record.key)
            record.finish(status)

    async def _write(self, send: Send, response: pb.GenerateResponse) -> None:
        # A bounded write: a client that stops reading must not hold its stream (and the
        # engine's memory) open forever. asyncio.timeout, not wait_for: Python 3.11's
        # wait_for drops a cancellation that lands as the write completes, and the call
        # would go on with nobody to read it.
        try:
            async with asyncio.timeout(self.admission.config.idle_stream_seconds):
                await send(response)
        except TimeoutError:
            raise _IdleStream from None

    def _failure(self, err: BaseException, record: RequestRecord, deadline) -> Failure:
        """Classify how a call ended; counts rejections and idle streams."""
        if isinstance(err, FieldError):
            return Failure("INVALID_ARGUMENT", str(err), field=err.field)
        if isinstance(err, QuotaExceeded):
            self.metrics.rejections.labels(err.reason).inc()
            message = f"{err}; retry in {err.retry_after:.3g} s"
            return Failure("RESOURCE_EXHAUSTED", message, retry_after=err.retry_after)
        if isinstance(err, QueueFullError):
            self.metrics.rejections.labels(err.limit_name or "queue").inc()
            retry = self.admission.config.retry_after_seconds
            message = f"{err}; retry in {retry:.3g} s"
            return Failure("RESOURCE_EXHAUSTED", message, retry_after=retry)
        if isinstance(err, _IdleStream):
            self.metrics.idle_streams.inc()
            idle = self.admission.config.idle_stream_seconds
            message = f"stream idle: the client read nothing for {idle:g} s (idle_stream_seconds)"
            return Failure("DEADLINE_EXCEEDED", message)
        if isinstance(err, TimeoutError):  # timeout_at: the call's own deadline
            return Failure("DEADLINE_EXCEEDED", "deadline exceeded")
        if isinstance(err, ClientGone):
            code = "DEADLINE_EXCEEDED" if _expired(deadline) else "CANCELLED"
            return Failure(code, "the client left", client_gone=True)
        failed = engine_failure(err)
        if failed is not None:  # logged once by the server, which then exits
            return Failure("UNAVAILABLE", str(failed))
        log.error("request %s failed", record.request_id, exc_info=err)
        return Failure("INTERNAL", "internal error; see the server log")

    async def _generate(self, request, deadline, record: RequestRecord, policy: KeyPolicy):
        check_request_id(request.request_id)
        self.check_model(request.model)
        args = convert.generate_args(request)
        # Validation decodes images and audio and sorts long lists: off the event loop, so
        # one large request cannot stall health checks and other streams.
        valid = await asyncio.to_thread(self.pipe.validate, args.prompt, args.output, args.sampling)
        # The engine's ids must be unique even when two callers pick the same request_id.
        tag = f"{record.request_id}.{uuid.uuid4().hex[:8]}"
        # The call's engine rows are one request of this key (fair sharing, one entry
        # against max_waiting_requests); the priority is the key's, not the client's.
        usage = Usage()
        stream = self.pipe.astream(
            valid,
            request_id=tag,
            priority=policy.priority,
            deadline=deadline,
            owner=record.key,
            usage=usage,
        )
        try:
            async for chunk in stream:
                if isinstance(chunk, GenerationOutput):
                    yield self._final(chunk, record)
                else:
                    yield convert.chunk_response(chunk, args, record.request_id)
        finally:
            await stream.aclose()
            if record.finish_reason is None:  # ended early: what the engine did produce
                record.prompt_tokens, record.output_tokens = (
                    usage.prompt_tokens,
                    usage.output_tokens,
                )

    def _final(self, result: GenerationOutput, record: RequestRecord) -> pb.GenerateResponse:
        record.finish_reason = result.finish_reason
        record.prompt_tokens, record.output_tokens = result.prompt_tokens, result.output_tokens
        record.queue_seconds = result.queue_seconds
        now = time.monotonic()
        first = record.first_chunk if record.first_chunk is not None else now
        return convert.final_response(
            result,
            record.request_id,
            queue_seconds=result.queue_seconds or 0.0,
            first_chunk_seconds=first - record.arrival,
            total_seconds=now - record.arrival,
        )


def engine_failure(err: BaseException | None) -> EngineFailedError | None:
    """The EngineFailedError behind `err` (itself or a cause), if any."""
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, EngineFailedError):
            return err
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline
