"""The BatchService servicer: gRPC over the server's BatchManager (serve/batches.py).

Status codes: INVALID_ARGUMENT for a batch refused before any work (the message names the
line: not JSON, no custom_id, a repeated custom_id, past max_lines or max_line_bytes),
NOT_FOUND for an unknown batch id (and for another key's batch: on a server with API keys
each key sees, reads and cancels only the batches it made, by its key_id), RESOURCE_EXHAUSTED when max_batches batches are kept
and none has ended, FAILED_PRECONDITION when the server has no state folder. Auth is the
server's interceptor (serve/auth.py protects every BatchService method).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from mmntp.batch.lines import BatchRefused
from mmntp.serve.auth import bearer_token
from mmntp.serve.batches import BatchInfo, BatchManager, BatchNotFound, TooManyBatches
from mmntp.serve.quotas import key_id
from mmntp.v1 import batch_pb2 as bpb
from mmntp.v1 import batch_pb2_grpc

NO_STATE_DIR = (
    "this server keeps no batches: start it with --state-dir DIR "
    "(or server.state_dir in service.json)"
)


class BatchServicer(batch_pb2_grpc.BatchServiceServicer):
    def __init__(self, manager: BatchManager | None, keyed: bool = False) -> None:
        """`keyed`: the server checks API keys, so batches belong to the caller's key."""
        self.manager, self.keyed = manager, keyed

    def _owner(self, context) -> str | None:
        """The caller's key_id (the interceptor has checked the key); None when the
        server has no keys, where every caller sees every batch."""
        if not self.keyed:
            return None
        return key_id(bearer_token(context.invocation_metadata()))

    async def _manager(self, context) -> BatchManager:
        if self.manager is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NO_STATE_DIR)
        return self.manager

    async def CreateBatch(self, request_iterator, context) -> bpb.Batch:
        manager = await self._manager(context)
        first = await anext(aiter(request_iterator), None)
        if first is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "lines: the batch is empty")
        try:
            info = await manager.create(
                first.name, _lines(first, request_iterator), self._owner(context)
            )
        except BatchRefused as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except TooManyBatches as err:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
        return batch_message(info)

    async def GetBatch(self, request, context) -> bpb.Batch:
        manager = await self._manager(context)
        try:
            return batch_message(manager.get(request.id, self._owner(context)))
        except BatchNotFound as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))

    async def ListBatches(self, request, context) -> bpb.ListBatchesResponse:
        manager = await self._manager(context)
        infos = manager.list(self._owner(context))
        return bpb.ListBatchesResponse(batches=[batch_message(i) for i in infos])

    async def CancelBatch(self, request, context) -> bpb.Batch:
        manager = await self._manager(context)
        try:
            return batch_message(await manager.cancel(request.id, self._owner(context)))
        except BatchNotFound as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))

    async def GetBatchResults(self, request, context):
        manager = await self._manager(context)
        owner = self._owner(context)
        try:
            manager.get(request.id, owner)
        except BatchNotFound as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(err))
        async for record, line, files in manager.results(request.id, owner):
            yield bpb.BatchResult(
                custom_id=record.get("custom_id", ""),
                status=record.get("status", ""),
                line=line,
                files=[bpb.BatchFile(path=path, data=data) for path, data in files],
            )


async def _lines(first: bpb.CreateBatchRequest, rest: AsyncIterator) -> AsyncIterator[bytes]:
    yield first.lines
    async for message in rest:
        yield message.lines


def batch_message(info: BatchInfo) -> bpb.Batch:
    return bpb.Batch(
        id=info.id,
        name=info.name,
        status=info.status,
        total=info.total,
        done=info.done,
        failed=info.failed,
        cancelled=info.cancelled,
        created_at=info.created_at,
        finished_at=info.finished_at,
        error=info.error,
    )
