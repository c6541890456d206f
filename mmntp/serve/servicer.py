"""The GenerationService servicer: gRPC's reading of requests and reporting of outcomes
around serve/core.py, which does the work (and which the HTTP API shares).

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

import time
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from mmntp.api import FieldError
from mmntp.serve import convert
from mmntp.serve.auth import bearer_token
from mmntp.serve.core import ClientGone, Failure, GenerateCore
from mmntp.serve.metrics import ServiceMetrics
from mmntp.serve.quotas import AdmissionConfig
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """One model's GenerationService over `pipe.astream` (the pipeline's AsyncEngine)."""

    def __init__(
        self, pipe: Any, metrics: ServiceMetrics, admission: AdmissionConfig | None = None
    ) -> None:
        self.core = GenerateCore(pipe, metrics, admission)
        self.pipe, self.metrics, self.admission = pipe, metrics, self.core.admission

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        # A coroutine writing with a bound, not an async generator: a client that stops
        # reading must not hold its stream (and the engine's memory) open forever.
        left = context.time_remaining()
        deadline = None if left is None else time.monotonic() + left

        async def send(response: pb.GenerateResponse) -> None:
            await _write(context, response)

        token = bearer_token(context.invocation_metadata())
        failure = await self.core.run(request, token, deadline, send)
        if failure is not None and not failure.client_gone:
            await _abort(context, failure)

    async def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[convert.model_info(self.pipe.model_info())])

    async def Tokenize(self, request, context):
        return await self._unary(convert.tokenize, request, context)

    async def Detokenize(self, request, context):
        return await self._unary(convert.detokenize, request, context)

    async def _unary(self, fn, request, context):
        try:
            return await self.core.unary(fn, request)
        except FieldError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))


async def _write(context: grpc.aio.ServicerContext, response: pb.GenerateResponse) -> None:
    try:
        await context.write(response)
    except Exception as err:
        # A write on a call the client has left fails with grpc's (private)
        # ExecuteBatchError, sometimes before the context reports it cancelled.
        gone = type(err).__name__ == "ExecuteBatchError"
        if gone or context.cancelled() or context.done():
            raise ClientGone from err
        raise


async def _abort(context: grpc.aio.ServicerContext, failure: Failure) -> None:
    """Abort with the failure's status; RESOURCE_EXHAUSTED carries a google.rpc.RetryInfo
    in the status details."""
    if failure.retry_after is None:
        await context.abort(grpc.StatusCode[failure.code], failure.message)
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(max(1, round(failure.retry_after * 1e9)))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    code = getattr(code_pb2, failure.code)
    status = status_pb2.Status(code=code, message=failure.message, details=[detail])
    await context.abort_with_status(rpc_status.to_status(status))
