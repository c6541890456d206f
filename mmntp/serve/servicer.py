"""The GenerationService servicer: validate, run on the pipeline's AsyncEngine, stream chunks.

Status codes follow ../docs/architecture.md: INVALID_ARGUMENT (message starts with the
field path) for anything malformed before it reaches the engine, RESOURCE_EXHAUSTED when
the engine's waiting queue is full or the caller's key is over its quota (the message
names the limit; a RetryInfo in the status details says when to retry), and a cancelled
or expired call aborts its engine requests within one step (the pipeline's stream closes
them). Admission (serve/quotas.py, docs/operations.md): the caller's key policy sets the
priority (the request's `priority` field is ignored) and its concurrency and rate quotas;
the engine shares its queue fairly between keys. Responses are written with a bound: a
stream whose client reads nothing for idle_stream_seconds ends DEADLINE_EXCEEDED and frees
its engine requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from mmntp.api import FieldError, GenerationOutput
from mmntp.engine import QueueFullError
from mmntp.engine.async_engine import EngineFailedError
from mmntp.generation.pipeline import Usage
from mmntp.generation.validate import check_request_id
from mmntp.serve import convert
from mmntp.serve.auth import bearer_token
from mmntp.serve.metrics import RequestRecord, ServiceMetrics
from mmntp.serve.quotas import Admission, AdmissionConfig, KeyPolicy, QuotaExceeded, key_id
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

log = logging.getLogger(__name__)


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """One model's GenerationService over `pipe.astream` (the pipeline's AsyncEngine)."""

    def __init__(
        self, pipe: Any, metrics: ServiceMetrics, admission: AdmissionConfig | None = None
    ) -> None:
        self.pipe, self.metrics = pipe, metrics
        # The key policies: given, else the file named by $MMNTP_KEY_POLICIES, else defaults.
        self.admission = Admission(admission or AdmissionConfig.from_env())

    def _check_model(self, name: str) -> None:
        if name and name != self.pipe.name:
            raise FieldError(
                "model", f"unknown model {name!r} (this server serves {self.pipe.name!r})"
            )

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        modality = request.output.WhichOneof("spec") or "unknown"
        record = self.metrics.track(request.request_id or uuid.uuid4().hex, modality)
        record.key = key_id(bearer_token(context.invocation_metadata()))
        status, admitted = "OK", False
        # A coroutine writing with a bound, not an async generator: a client that stops
        # reading must not hold its stream (and the engine's memory) open forever.
        try:
            policy = self.admission.admit(record.key)
            admitted = True
            responses = self._generate(request, context, record, policy)
            async with contextlib.aclosing(responses):  # closing it frees the engine
                async for response in responses:
                    await self._write(context, response)
                    record.sent()
        except FieldError as err:
            status = "INVALID_ARGUMENT"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except QuotaExceeded as err:
            status = "RESOURCE_EXHAUSTED"
            self.metrics.rejections.labels(err.reason).inc()
            await _exhausted(context, f"{err}; retry in {err.retry_after:.3g} s", err.retry_after)
        except QueueFullError as err:
            status = "RESOURCE_EXHAUSTED"
            self.metrics.rejections.labels(err.limit_name or "queue").inc()
            retry = self.admission.config.retry_after_seconds
            await _exhausted(context, f"{err}; retry in {retry:.3g} s", retry)
        except _IdleStream:
            status = "DEADLINE_EXCEEDED"
            self.metrics.idle_streams.inc()
            idle = self.admission.config.idle_stream_seconds
            await context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"stream idle: the client read nothing for {idle:g} s (idle_stream_seconds)",
            )
        except asyncio.CancelledError:
            # The client left or its deadline passed: closing the stream aborted the engine.
            status = "DEADLINE_EXCEEDED" if _expired(context) else "CANCELLED"
            raise
        except _ClientGone:  # the same, noticed by a failed write
            status = "DEADLINE_EXCEEDED" if _expired(context) else "CANCELLED"
        except EngineFailedError as err:  # logged once by the server, which then exits
            status = "UNAVAILABLE"
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        except Exception:
            status = "INTERNAL"
            log.exception("request %s failed", record.request_id)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            if admitted:
                self.admission.release(record.key)
            record.finish(status)

    async def _write(self, context: grpc.aio.ServicerContext, response) -> None:
        try:
            await asyncio.wait_for(
                context.write(response), self.admission.config.idle_stream_seconds
            )
        except TimeoutError:
            raise _IdleStream from None
        except Exception as err:
            # A write on a call the client has left fails with grpc's (private)
            # ExecuteBatchError, sometimes before the context reports it cancelled.
            gone = type(err).__name__ == "ExecuteBatchError"
            if gone or context.cancelled() or context.done():
                raise _ClientGone from err
            raise

    async def _generate(self, request, context, record: RequestRecord, policy: KeyPolicy):
        check_request_id(request.request_id)
        self._check_model(request.model)
        args = convert.generate_args(request)
        # Validation decodes images and audio and sorts long lists: off the event loop, so
        # one large request cannot stall health checks and other streams.
        valid = await asyncio.to_thread(self.pipe.validate, args.prompt, args.output, args.sampling)
        left = context.time_remaining()
        deadline = None if left is None else time.monotonic() + left
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

    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[convert.model_info(self.pipe.model_info())])

    async def Tokenize(self, request, context):
        return await self._unary(convert.tokenize, request, context)

    async def Detokenize(self, request, context):
        return await self._unary(convert.detokenize, request, context)

    async def _unary(self, fn, request, context):
        try:
            self._check_model(request.model)
            return await asyncio.to_thread(fn, request, self.pipe)  # tokenizing is CPU work
        except FieldError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


class _IdleStream(Exception):
    """The client has not read a response for idle_stream_seconds."""


class _ClientGone(Exception):
    """A write failed because the call has ended (cancelled or expired)."""


async def _exhausted(context: grpc.aio.ServicerContext, message: str, retry_after: float):
    """Abort RESOURCE_EXHAUSTED with a google.rpc.RetryInfo in the status details."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(1, round(retry_after * 1e9)))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[detail])
    await context.abort_with_status(rpc_status.to_status(status))


def _expired(context: grpc.aio.ServicerContext) -> bool:
    left = context.time_remaining()
    return left is not None and left <= 0
