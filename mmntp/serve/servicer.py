"""The GenerationService servicer: validate, run on the pipeline's AsyncEngine, stream chunks.

Status codes follow ../docs/architecture.md: INVALID_ARGUMENT (message starts with the
field path) for anything malformed before it reaches the engine, RESOURCE_EXHAUSTED when
the engine's waiting queue is full, and a cancelled or expired call aborts its engine
requests within one step (the pipeline's stream closes them).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import grpc

from mmntp.api import FieldError, GenerationOutput
from mmntp.engine import QueueFullError
from mmntp.generation.validate import check_request_id
from mmntp.serve import convert
from mmntp.serve.metrics import RequestRecord, ServiceMetrics
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

log = logging.getLogger(__name__)


class GenerationServicer(generation_pb2_grpc.GenerationServiceServicer):
    """One model's GenerationService over `pipe.astream` (the pipeline's AsyncEngine)."""

    def __init__(self, pipe: Any, metrics: ServiceMetrics) -> None:
        self.pipe, self.metrics = pipe, metrics

    def _check_model(self, name: str) -> None:
        if name and name != self.pipe.name:
            raise FieldError(
                "model", f"unknown model {name!r} (this server serves {self.pipe.name!r})"
            )

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        modality = request.output.WhichOneof("spec") or "unknown"
        record = self.metrics.track(request.request_id or uuid.uuid4().hex, modality)
        status = "OK"
        try:
            async for response in self._generate(request, context, record):
                yield response
                record.sent()
        except FieldError as err:
            status = "INVALID_ARGUMENT"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except QueueFullError as err:
            status = "RESOURCE_EXHAUSTED"
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{err}; retry later")
        except asyncio.CancelledError:
            # The client left or its deadline passed: closing the stream aborted the engine.
            status = "DEADLINE_EXCEEDED" if _expired(context) else "CANCELLED"
            raise
        except Exception:
            status = "INTERNAL"
            log.exception("request %s failed", record.request_id)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        finally:
            record.finish(status)

    async def _generate(self, request, context, record: RequestRecord):
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
        stream = self.pipe.astream(
            valid,
            request_id=tag,
            priority=request.priority,
            deadline=deadline,
        )
        try:
            async for chunk in stream:
                if isinstance(chunk, GenerationOutput):
                    yield self._final(chunk, record)
                else:
                    yield convert.chunk_response(chunk, args, record.request_id)
        finally:
            await stream.aclose()

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


def _expired(context: grpc.aio.ServicerContext) -> bool:
    left = context.time_remaining()
    return left is not None and left <= 0
