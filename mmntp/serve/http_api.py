"""The HTTP API beside gRPC: the same engine, keys, admission and validation (serve/core.py).

Bodies are the proto messages' standard JSON mapping (protobuf's json_format: camelCase or
the proto's names, int64 as strings, bytes as base64), so a `GenerateRequest` is
`{"prompt": [...], "output": {...}, "sampling": {...}}`; /v1/generate also takes `stream`
(bool) and `timeout` (seconds), popped before parsing. Endpoints, status mapping and the
SSE format are documented in docs/operations.md ("HTTP API"):

    POST /v1/generate    {"responses": [GenerateResponse, ...]} or, with "stream": true,
                         Server-Sent Events: one `data: <GenerateResponse JSON>` per message
    GET  /v1/models      ListModelsResponse       POST /v1/tokenize, /v1/detokenize
    GET  /healthz        liveness (200 / 503)     GET  /readyz  readiness (200 / 503)
    GET  /openapi.json   generated from the proto descriptors (serve/openapi.py)
    GET  /               the playground (static files in mmntp/serve/playground/)

/v1/* needs `Authorization: Bearer KEY` when the server has keys (the same KeyCheck as
gRPC: the same metric and log); the probes, the document and the page stay open, as gRPC's
health and reflection do. A client that disconnects cancels its call, which closes the
engine stream: its engine rows are aborted within one step, as a gRPC cancel does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mmntp.api import FieldError
from mmntp.api.errors import join
from mmntp.serve import convert
from mmntp.serve.auth import KeyCheck, bearer_token
from mmntp.serve.core import Failure, GenerateCore
from mmntp.serve.openapi import openapi_document
from mmntp.v1 import generation_pb2 as pb

log = logging.getLogger("mmntp.serve")
PLAYGROUND = Path(__file__).resolve().parent / "playground"
TIMEOUT_HEADER = "x-request-timeout"  # seconds, like gRPC's grpc-timeout
# gRPC status name -> HTTP status. CANCELLED is 499 (nginx's "client closed request"): only
# the log and the metrics see it, since the client has gone.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class HttpError(Exception):
    """A request the HTTP layer answers with an error body (see `error_body`)."""

    def __init__(self, failure: Failure, status: int | None = None) -> None:
        super().__init__(failure.message)
        self.failure, self.status = failure, status or HTTP_STATUS[failure.code]

    def response(self) -> JSONResponse:
        failure, headers = self.failure, {}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(failure.retry_after)))
        if failure.code == "UNAUTHENTICATED":
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(error_body(failure, self.status), self.status, headers)


def error_body(failure: Failure, status: int | None = None) -> dict[str, Any]:
    status = status or HTTP_STATUS[failure.code]
    error = {"code": failure.code, "status": status, "message": failure.message}
    return {"error": error | {"field": failure.field}}


def invalid(message: str, field: str | None = None) -> HttpError:
    return HttpError(Failure("INVALID_ARGUMENT", message, field=field))


def build_app(
    core: GenerateCore,
    keys: KeyCheck | None,
    live: Callable[[], bool],
    ready: Callable[[], bool],
    max_body_bytes: int,
) -> Starlette:
    """The Starlette app of one server (see the module docstring)."""
    api = _Api(core, max_body_bytes)
    routes = [
        Route("/v1/generate", api.generate, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/tokenize", api.tokenize, methods=["POST"]),
        Route("/v1/detokenize", api.detokenize, methods=["POST"]),
        Route("/healthz", _probe(live), methods=["GET"]),
        Route("/readyz", _probe(ready), methods=["GET"]),
        Route("/openapi.json", _openapi, methods=["GET"]),
        Route("/", _index, methods=["GET"]),
        # check_dir off: the page's engineer may ship only index.html, or nothing yet.
        Mount("/playground", StaticFiles(directory=PLAYGROUND, check_dir=False)),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(_RequireKey, keys=keys)],
        exception_handlers={
            HttpError: lambda request, err: err.response(),
            404: _route,
            405: _route,
        },
    )


def _route(request: Request, err: HTTPException) -> Response:
    """An unknown path or method, in the API's error body (gRPC: UNIMPLEMENTED)."""
    code = "NOT_FOUND" if err.status_code == 404 else "UNIMPLEMENTED"
    message = f"{request.method} {request.url.path}: {err.detail}"
    response = HttpError(Failure(code, message), err.status_code).response()
    response.headers.update(err.headers or {})  # a 405's Allow
    return response


class _Api:
    def __init__(self, core: GenerateCore, max_body_bytes: int) -> None:
        self.core, self.max_body_bytes = core, max_body_bytes

    async def generate(self, request: Request) -> Response:
        data = await read_json(request, self.max_body_bytes)
        stream = data.pop("stream", False)
        if not isinstance(stream, bool):
            raise invalid(f"stream: must be true or false, got {stream!r}", "stream")
        timeout = _timeout(data.pop("timeout", None), request.headers.get(TIMEOUT_HEADER))
        message = parse(data, pb.GenerateRequest)
        deadline = None if timeout is None else time.monotonic() + timeout
        token = bearer_token(request.headers.items())
        return _GenerateCall(self.core, message, token, deadline, stream)

    async def models(self, request: Request) -> Response:
        info = convert.model_info(self.core.pipe.model_info())
        return proto_response(pb.ListModelsResponse(models=[info]))

    async def tokenize(self, request: Request) -> Response:
        return await self._unary(request, pb.TokenizeRequest, convert.tokenize)

    async def detokenize(self, request: Request) -> Response:
        return await self._unary(request, pb.DetokenizeRequest, convert.detokenize)

    async def _unary(self, request: Request, kind: type[Message], fn) -> Response:
        message = parse(await read_json(request, self.max_body_bytes), kind)
        try:
            return proto_response(await self.core.unary(fn, message))
        except FieldError as err:
            raise invalid(str(err), err.field) from None
        except Exception:
            log.exception("%s failed", request.url.path)
            raise HttpError(Failure("INTERNAL", "internal error; see the server log")) from None


# -- reading requests ------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refused (413) past `limit` bytes as it arrives."""
    too_large = HttpError(
        Failure("RESOURCE_EXHAUSTED", f"body over max_message_bytes ({limit} bytes)"), 413
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    try:
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise too_large
    except ClientDisconnect:  # left while sending: nobody reads the answer
        raise HttpError(Failure("CANCELLED", "the client left")) from None
    try:
        data = json.loads(body)
    except UnicodeDecodeError as err:
        raise invalid(f"body is not UTF-8: {err.reason} at byte {err.start}") from None
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise invalid(f"body is not JSON: {err.msg} at {where}") from None
    except RecursionError:
        raise invalid("body is nested too deeply") from None
    if not isinstance(data, dict):
        raise invalid(f"body must be a JSON object, got {type(data).__name__}")
    return data


def parse(data: dict[str, Any], kind: type[Message]) -> Message:
    """`data` as a `kind` message (json_format's standard mapping); 400 naming the field."""
    try:
        return json_format.ParseDict(data, kind())
    except json_format.ParseError as err:
        message = " ".join(str(err).split()).rstrip(".")
        raise invalid(message, culprit(data, kind.DESCRIPTOR)) from None
    except RecursionError:
        raise invalid("body is nested too deeply") from None


def culprit(data: Any, descriptor: Descriptor, path: str = "") -> str | None:
    """The path (proto names, "output.timeseries.horizon") of the first part of `data`
    that ParseDict refuses; the message's own path when only the whole is wrong (two
    members of a oneof). Only called once ParseDict has failed: ParseDict is the judge,
    this only finds what it judged."""
    if not isinstance(data, dict):
        return path or None
    fields = {f.json_name: f for f in descriptor.fields} | {f.name: f for f in descriptor.fields}
    make = message_factory.GetMessageClass(descriptor)
    for key, value in data.items():
        field = fields.get(key)
        here = join(path, key if field is None else field.name)
        if field is None or not _parses({key: value}, make):
            return _inner(field, value, here, make) if field is not None else here
    return path or None


def _inner(field: FieldDescriptor, value: Any, here: str, make) -> str:
    """Within a refused field: its refused element or nested field, else the field."""
    items = enumerate(value) if field.is_repeated and isinstance(value, list) else ()
    for i, item in items:
        if not _parses({field.name: [item]}, make):
            return _inner_item(field, item, f"{here}[{i}]")
    if not field.is_repeated:
        return _inner_item(field, value, here)
    return here


def _inner_item(field: FieldDescriptor, item: Any, here: str) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return culprit(item, field.message_type, here) or here
    return here


def _parses(data: dict[str, Any], make) -> bool:
    try:
        json_format.ParseDict(data, make())
    except (json_format.ParseError, RecursionError):
        return False
    return True


def _timeout(field: Any, header: str | None) -> float | None:
    """Seconds until the call's deadline: the `timeout` field, else X-Request-Timeout."""
    where, value = ("timeout", field) if field is not None else (TIMEOUT_HEADER, header)
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not (math.isfinite(seconds) and seconds > 0):
        raise invalid(f"{where}: must be a positive number of seconds, got {value!r}", where)
    return seconds


# -- answering -------------------------------------------------------------------------


def message_dict(message: Message) -> dict[str, Any]:
    # Fields at their default are written too (a series' step 0, an image preview's
    # final false): a browser need not know proto3's defaults. Unset oneof members and
    # messages (`final` before the last response) stay absent.
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def proto_response(message: Message) -> JSONResponse:
    return JSONResponse(message_dict(message))


def sse_event(data: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class _GenerateCall:
    """An ASGI response that runs one Generate through the core, streamed as SSE or
    gathered into one JSON object, and cancels it when the client disconnects."""

    def __init__(self, core: GenerateCore, request, token, deadline, stream: bool) -> None:
        self.core, self.request, self.token = core, request, token
        self.deadline, self.stream = deadline, stream
        self.responses: list[pb.GenerateResponse] = []
        self.started = False

    async def __call__(self, scope, receive, send) -> None:
        async def emit(response: pb.GenerateResponse) -> None:
            if not self.stream:
                self.responses.append(response)
                return
            if not self.started:
                self.started = True
                await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            body = sse_event(message_dict(response))
            await send({"type": "http.response.body", "body": body, "more_body": True})

        run = self.core.run(self.request, self.token, self.deadline, emit)
        done, failure = await _unless_disconnected(receive, run)
        if not done:
            return  # the client left: the core logged and counted it (499)
        if self.started:  # the stream is under way: an error can only be an event now
            tail = b"" if failure is None else sse_event(error_body(failure), "error")
            last = {"type": "http.response.body", "body": tail, "more_body": False}
            # Bounded as every write is: after an idle stream this one may never drain.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.core.admission.config.idle_stream_seconds):
                    await send(last)
            return
        await self._answer(failure)(scope, receive, send)

    def _answer(self, failure: Failure | None) -> Response:
        if failure is not None:
            return HttpError(failure).response()
        last = self.responses[-1] if self.responses else None
        if last is not None and last.final.finish_reason == pb.FINISH_REASON_DEADLINE:
            # The engine ended the rows at the deadline a moment before the call did.
            return HttpError(Failure("DEADLINE_EXCEEDED", "deadline exceeded")).response()
        if self.stream:  # a stream without a message: no event to send
            return Response(b"", 200, media_type="text/event-stream")
        return JSONResponse({"responses": [message_dict(r) for r in self.responses]})


_SSE = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass events on as they come
]


async def _unless_disconnected(receive, work) -> tuple[bool, Any]:
    """(True, result) of `work`, or (False, None) once the client disconnects first (the
    request body has been read: what `receive` gives next is the disconnect)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()  # closes the engine stream: its rows abort within one step
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        return False, None
    return True, task.result()


async def _disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# -- the open routes ---------------------------------------------------------------------


def _probe(state: Callable[[], bool]):
    async def probe(request: Request) -> Response:
        ok = state()
        return JSONResponse({"status": "SERVING" if ok else "NOT_SERVING"}, 200 if ok else 503)

    return probe


async def _openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def _index(request: Request) -> Response:
    index = PLAYGROUND / "index.html"
    if not index.is_file():
        raise HttpError(Failure("NOT_FOUND", "this build ships no playground page"))
    return FileResponse(index)


class _RequireKey:
    """ASGI middleware: /v1/* needs a configured key when the server has keys."""

    def __init__(self, app, keys: KeyCheck | None) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope, receive, send) -> None:
        if self.keys is not None and scope["type"] == "http" and scope["path"].startswith("/v1/"):
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            method = f"{scope['method']} {scope['path']}"
            reason = self.keys.refusal(bearer_token(headers), method)
            if reason is not None:
                message = f"{reason} API key: send the header 'Authorization: Bearer KEY'"
                refusal = HttpError(Failure("UNAUTHENTICATED", message)).response()
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- the server ------------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # The gRPC server's loop handlers own SIGTERM and SIGINT (serve_until_signal);
        # uvicorn's own would replace them and re-raise the signal when it stops.
        yield


class HttpServer:
    """The app on uvicorn, as a task of the running loop (the gRPC server's)."""

    def __init__(self, core, keys, live, ready, config, tls: tuple[Path, Path] | None) -> None:
        app = build_app(core, keys, live, ready, config.max_message_bytes)
        certfile, keyfile = tls or (None, None)
        self.uvicorn = _Uvicorn(
            uvicorn.Config(
                app,
                loop="none",  # the running loop: the engine serves one loop
                lifespan="off",
                log_config=None,  # leave the process's logging as `mmntp serve` set it
                access_log=False,  # one line per request already goes to mmntp.requests
                ws="none",
                # Past this many connections or tasks uvicorn answers 503 itself.
                limit_concurrency=config.max_concurrent_rpcs,
                timeout_keep_alive=max(1, int(config.keepalive_seconds)),
                timeout_graceful_shutdown=config.grace_seconds,
                ssl_certfile=certfile,
                ssl_keyfile=keyfile,
            )
        )
        self._task: asyncio.Task | None = None

    async def start(self, sock: socket.socket) -> int:
        """Serve on the bound `sock`; returns its port once uvicorn is listening."""
        port = sock.getsockname()[1]
        self._task = asyncio.ensure_future(self.uvicorn.serve(sockets=[sock]))
        while not self.uvicorn.started:
            if self._task.done():  # uvicorn exits (SystemExit) rather than raising
                sock.close()
                raise OSError(f"the HTTP server did not start on port {port}")
            await asyncio.sleep(0.01)
        return port

    async def stop(self, grace: float) -> None:
        """Refuse new connections; let in-flight calls finish within `grace` seconds."""
        if self._task is None:
            return
        self.uvicorn.config.timeout_graceful_shutdown = grace
        self.uvicorn.should_exit = True
        with contextlib.suppress(BaseException):  # SystemExit from a failed start included
            await self._task
        self._task = None
