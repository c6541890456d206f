"""`mmntp serve`: the gRPC server (grpc.aio) around one pipeline.

Start-up order: load the service, build the server with readiness NOT_SERVING, bind (the
port is owned: `grpc.so_reuseport` is off, so a second server on a busy port fails with
ServeError naming the port), build every tokenizer (always, warm-up or not: a corrupt card
fails here, not on a caller's request), warm the engine up with one tiny request per
output modality, then report SERVING. Any failure on the way raises ServeError (one line:
the CLI prints it and exits 1). SIGTERM (or SIGINT) during start-up stops at once and the
process exits 0; afterwards it marks health NOT_SERVING, stops taking calls, lets in-flight
streams finish within the grace period, then returns so the process exits 0.

With `http_port` set, the HTTP API (serve/http_api.py: the same core, keys and limits) is
served from the bind on, as a task of the same event loop, and stops with the gRPC server;
its /healthz and /readyz answer what liveness and readiness say here.

Health (grpc.health.v1): readiness is "", "readiness", "mmntp.v1.GenerationService" and
"mmntp.v1.BatchService" (SERVING only once warm and while the engine lives; gauge `mmntp_ready`); liveness is
"liveness" (SERVING from bind while the event loop answers; NOT_SERVING only on shutdown
or once the engine is dead, which this process cannot recover from).

Supervision: the engine is not restarted in-process. When a step raises, the AsyncEngine
fails every in-flight request (callers get UNAVAILABLE "engine failed: <reason>", not
INTERNAL), readiness and liveness turn NOT_SERVING, `mmntp_engine_failures_total{reason=
"engine"}` counts it, the reason is logged once, and `serve_until_signal` stops the server
and raises ServeError so `mmntp serve` exits 1 for its supervisor (systemd, Kubernetes) to
restart it. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import ipaddress
import logging
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mmntp.api import SamplingParams, TimeSeriesOutput, TimeSeriesPart, TokenIdsPart, TokensOutput
from mmntp.engine.async_engine import EngineFailedError
from mmntp.engine.compiled_decode import warm_up_prompts
from mmntp.serve.auth import ApiKeyInterceptor, FailureLog, KeyCheck
from mmntp.serve.batch_servicer import BatchServicer
from mmntp.serve.batches import BatchLimits, BatchManager
from mmntp.serve.core import engine_failure
from mmntp.serve.http_api import HttpServer
from mmntp.serve.metrics import ServerHealthMetrics, ServiceMetrics
from mmntp.serve.quotas import AdmissionConfig
from mmntp.serve.servicer import GenerationServicer
from mmntp.v1 import batch_pb2, batch_pb2_grpc, generation_pb2_grpc
from mmntp.v1 import generation_pb2 as pb

log = logging.getLogger("mmntp.serve")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GenerationService"].full_name
BATCH_SERVICE_NAME = batch_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Health names that follow the engine.
READINESS = ("", "readiness", SERVICE_NAME, BATCH_SERVICE_NAME)
LIVENESS = "liveness"  # SERVING while the process is worth keeping
FAILURE_GRACE_SECONDS = 5.0  # grace for other calls when the engine has died
T = TypeVar("T")


class ServeError(RuntimeError):
    """The server cannot start or go on (port, TLS, auth, model load, dead engine): one
    line for the operator."""


class Interrupted(Exception):
    """SIGTERM or SIGINT arrived before the server was up."""


@dataclass
class ServerConfig:
    """Server settings (service.json "server"; command-line flags override them)."""

    host: str = "127.0.0.1"
    port: int = 50051
    max_message_bytes: int = 16 << 20  # receive and send limit per message
    max_concurrent_rpcs: int = 512  # past this gRPC answers RESOURCE_EXHAUSTED itself
    grace_seconds: float = 30.0  # how long in-flight streams may finish after SIGTERM
    keepalive_seconds: float = 60.0
    warmup: bool = True
    # torch intra-op threads of the `mmntp serve` process (0 = torch's default, one per
    # core). One by default: the event loop, gRPC's threads and the engine share the
    # cores, and a second OpenMP thread stalls whenever one of them is preempted. Measured
    # with the bundled model on 2 cores: 1 s of audio over gRPC in 0.24 s with 1 thread,
    # 0.39 s with 2; the serve benchmark's latency p50 / p99 123 / 188 ms against 167 / 335.
    torch_threads: int = 1
    # Serve without API keys on a non-loopback address, or with a blank key set
    # (`--allow-unauthenticated`); without it such a server refuses to start.
    allow_unauthenticated: bool = False
    # Where BatchService keeps its batches (`--state-dir`; `mmntp serve` defaults to
    # $XDG_STATE_HOME/mmntp/<service name>). None: BatchService answers
    # FAILED_PRECONDITION. See docs/operations.md ("Batch jobs").
    state_dir: str | None = None
    batch_max_lines: int = 50_000  # request lines per batch
    batch_max_line_bytes: int = 1 << 20  # bytes per JSONL line
    max_batches: int = 100  # batches kept; creating one more evicts the oldest ended one
    # Engine rows of batch work in flight, over all batches (a forecast takes one row per
    # sample path; one request always goes, whatever its rows). An interactive request
    # that arrives mid-step waits for that step, whose time grows with its rows.
    batch_rows: int = 16
    # Batch rows step only after this many seconds without an interactive request in
    # flight, so requests sent one after another do not each wait for a batch step.
    batch_idle_seconds: float = 0.2
    # The HTTP API's port (serve/http_api.py; 0 picks a free one; None: no HTTP), served
    # by the same process and event loop, on the same host.
    http_port: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"server.port must be in [0, 65535], got {self.port}")
        if self.http_port is not None and (
            isinstance(self.http_port, bool)
            or not isinstance(self.http_port, int)
            or not 0 <= self.http_port <= 65535
        ):
            raise ValueError(f"server.http_port must be in [0, 65535], got {self.http_port!r}")
        positive = ("max_message_bytes", "max_concurrent_rpcs", "batch_max_lines")
        positive += ("batch_max_line_bytes", "max_batches", "batch_rows")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"server.{name} must be positive, got {getattr(self, name)}")
        if not self.batch_idle_seconds >= 0:
            raise ValueError(
                f"server.batch_idle_seconds must be >= 0, got {self.batch_idle_seconds}"
            )
        if self.grace_seconds < 0:
            raise ValueError(f"server.grace_seconds must be >= 0, got {self.grace_seconds}")
        if isinstance(self.torch_threads, bool) or not isinstance(self.torch_threads, int):
            raise ValueError(f"server.torch_threads must be an integer, got {self.torch_threads!r}")
        if self.torch_threads < 0:
            raise ValueError(f"server.torch_threads must be >= 0, got {self.torch_threads}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown server settings: {sorted(unknown)}")
        return cls(**data)

    def grpc_options(self) -> list[tuple[str, int]]:
        ms = int(self.keepalive_seconds * 1000)
        return [
            ("grpc.so_reuseport", 0),  # own the port: a second server must fail to bind
            ("grpc.max_receive_message_length", self.max_message_bytes),
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.keepalive_time_ms", ms),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ]


@dataclass
class TlsFiles:
    cert: Path
    key: Path

    def credentials(self) -> grpc.ServerCredentials:
        """The gRPC credentials; ServeError names the problem (gRPC only says "Failed to
        bind to address")."""
        cert, key = self.check()
        return grpc.ssl_server_credentials([(key, cert)])

    def check(self) -> tuple[bytes, bytes]:
        """(certificate, key) bytes once both parse and the key matches the certificate."""
        cert, key = _read(self.cert, "certificate"), _read(self.key, "key")
        if b"-----BEGIN CERTIFICATE-----" not in cert:
            raise ServeError(f"TLS certificate {self.cert} is not PEM (no BEGIN CERTIFICATE)")
        if b"-----BEGIN" not in key or b"PRIVATE KEY-----" not in key:
            raise ServeError(f"TLS key {self.key} is not a PEM private key")
        if b"ENCRYPTED" in key:
            raise ServeError(f"TLS key {self.key} is encrypted; give an unencrypted key")
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.cert, self.key, password=b"")
        except ssl.SSLError as err:
            if err.reason == "KEY_VALUES_MISMATCH":
                raise ServeError(
                    f"TLS key {self.key} does not match the certificate {self.cert}"
                ) from None
            which = "key" if "3926" in str(err) else "certificate"  # OpenSSL's PEM_lib site
            path = self.key if which == "key" else self.cert
            raise ServeError(f"TLS {which} {path} does not parse: {err}") from None
        return cert, key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ServeError(f"cannot read TLS {what} {path}: {err.strerror or err}") from None


@dataclass
class Server:
    """A built, not yet started, server; `start()` binds, loads, warms up, reports SERVING.

    After a failed `start()` call `stop()`. `failed` is set (and `failure` holds the
    cause) when the engine dies; `serve_until_signal` watches it.
    """

    pipe: Any
    config: ServerConfig
    api_keys: list[str] = field(default_factory=list)
    tls: TlsFiles | None = None
    metrics_port: int | None = None
    admission: AdmissionConfig | None = None  # key policies; None: $MMNTP_KEY_POLICIES

    def __post_init__(self) -> None:
        self._check_auth()
        self.metrics = ServiceMetrics(self.pipe)
        self.health_metrics = ServerHealthMetrics(self.metrics.registry)
        self.health = health.aio.HealthServicer()
        interceptors: list[grpc.aio.ServerInterceptor] = []
        self.key_check: KeyCheck | None = None  # shared by gRPC and HTTP
        if self.api_keys:
            refused = self.health_metrics.auth_failures
            self.key_check = KeyCheck(self.api_keys, on_failure=lambda r: refused.labels(r).inc())
            interceptors.append(ApiKeyInterceptor(check=self.key_check))
        # After auth: a refused call is refused before its bytes are judged.
        interceptors.append(_Guard(self.health_metrics))
        self.grpc = grpc.aio.server(
            interceptors=interceptors,
            options=self.config.grpc_options(),
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        self.servicer = GenerationServicer(self.pipe, self.metrics, self.admission)
        generation_pb2_grpc.add_GenerationServiceServicer_to_server(self.servicer, self.grpc)
        self.batches = None
        if self.config.state_dir is not None:
            self.batches = BatchManager(self.pipe, self.config.state_dir, self._batch_limits())
            self.pipe.async_engine.background_delay = self.config.batch_idle_seconds
        batch_pb2_grpc.add_BatchServiceServicer_to_server(
            BatchServicer(self.batches, keyed=bool(self.api_keys)), self.grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        names = (SERVICE_NAME, BATCH_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.grpc)
        self.port: int | None = None
        self.http_port: int | None = None
        self.http: HttpServer | None = None
        self.ready = self.live = False  # what the health service reports, for HTTP's probes
        self.failure: BaseException | None = None
        self.failed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    def _batch_limits(self) -> BatchLimits:
        cfg = self.config
        return BatchLimits(
            cfg.batch_max_lines, cfg.batch_max_line_bytes, cfg.max_batches, cfg.batch_rows
        )

    def _check_auth(self) -> None:
        host, loopback = self.config.host, _is_loopback(self.config.host)
        if not self.api_keys and not loopback and not self.config.allow_unauthenticated:
            raise ServeError(
                f"refusing to serve {host} without API keys: set $MMNTP_API_KEYS or "
                "--api-keys-file, or pass --allow-unauthenticated"
            )
        if not self.api_keys:
            log.warning("no API keys configured: the server is open to anyone who reaches it")
        elif self.tls is None and not loopback:
            log.warning(
                "API keys are configured without TLS on %s: keys travel in plaintext "
                "(serve TLS with --tls-cert/--tls-key, or terminate TLS in front)",
                host,
            )

    async def start(self) -> int:
        """Bind, load, warm up, report SERVING; returns the bound port (0 picks a free one)."""
        await self._set_ready(False)
        self.port = self._bind()
        await self.grpc.start()
        await self.health.set(LIVENESS, SERVING)
        self.live = True
        if self.config.http_port is not None:
            await self._start_http(self.config.http_port)
        if self.metrics_port is not None:
            try:
                bound = self.metrics.start_http(self.metrics_port, addr=self.config.host)
            except OSError as err:
                raise ServeError(
                    f"metrics port {self.metrics_port}: {err.strerror or err}"
                ) from None
            log.info("metrics on http://%s:%d/metrics", self.config.host, bound)
        engine = self.pipe.async_engine
        if engine.dead is not None:
            raise self._fatal("engine", EngineFailedError(engine.dead))
        if self._engine_failed not in engine.on_failure:
            engine.on_failure.append(self._engine_failed)
        await self._load()
        if self.config.warmup:
            log.info("warming up")
            try:
                await warm_up(self.pipe)
            except Exception as err:
                raise self._fatal("warmup", err) from err
        if self.failure is not None:  # the engine died under the warm-up's last request
            raise ServeError(f"engine failed: {_reason(self.failure)}")
        if self.batches is not None:  # after the warm-up: resumed batches are not first
            try:
                await self.batches.start()
            except Exception as err:
                raise self._fatal("batches", err, f"state dir {self.config.state_dir}") from err
        await self._set_ready(True)
        scheme = "grpcs" if self.tls else "grpc"
        auth = f"{len(self.api_keys)} API key(s)" if self.api_keys else "no authentication"
        log.info(
            "serving %r on %s://%s:%d (%s, %d torch threads)",
            self.pipe.name,
            scheme,
            self.config.host,
            self.port,
            auth,
            torch.get_num_threads(),
        )
        return self.port

    def _bind(self) -> int:
        host, port = self.config.host, self.config.port
        address = f"{host}:{port}"
        credentials = None if self.tls is None else self.tls.credentials()  # checked first
        try:
            if credentials is None:
                bound = self.grpc.add_insecure_port(address)
            else:
                bound = self.grpc.add_secure_port(address, credentials)
        except RuntimeError:  # grpc's "Failed to bind to address": find out why
            bound = 0
        if bound == 0:
            raise ServeError(f"cannot bind {address}: {_why_unbindable(host, port)}")
        return bound

    async def _load(self) -> None:
        """Build every tokenizer (they load lazily): a broken card fails start-up."""
        toks = self.pipe.bundle.tokenizers
        log.info("loading tokenizers: %s", ", ".join(toks))

        def build() -> None:
            for key in toks:
                try:
                    toks[key]
                except Exception as err:
                    raise ServeError(f"tokenizer {key!r}: {_reason(err)}") from err

        try:
            await asyncio.to_thread(build)
        except ServeError as err:
            raise self._fatal("load", err, f"model {self.pipe.name!r} failed to load") from err

    def _fatal(self, stage: str, err: BaseException, what: str = "") -> ServeError:
        """Count and log a failure that leaves the server unready; the error to raise."""
        self.health_metrics.engine_failures.labels(stage).inc()
        self.health_metrics.ready.set(0)
        message = f"{what or stage + ' failed'}: {_reason(err)}"
        log.error("not ready: %s", message)
        return ServeError(message)

    def _engine_failed(self, cause: BaseException) -> None:
        """AsyncEngine.on_failure: runs once, on the event loop, when the engine dies."""
        self.failure = cause
        self.health_metrics.engine_failures.labels("engine").inc()
        log.error(
            "engine failed: %s; readiness and liveness NOT_SERVING, in-flight requests "
            "get UNAVAILABLE, the server stops",
            _reason(cause),
            exc_info=(type(cause), cause, cause.__traceback__),
        )
        task = asyncio.get_running_loop().create_task(self._set_ready(False, live=False))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.failed.set()

    async def _set_ready(self, ready: bool, live: bool = True) -> None:
        for name in READINESS:
            await self.health.set(name, SERVING if ready else NOT_SERVING)
        if not live:
            await self.health.set(LIVENESS, NOT_SERVING)
        self.ready, self.live = ready, self.live and live
        self.health_metrics.ready.set(1 if ready else 0)

    async def _start_http(self, port: int) -> None:
        self.http = HttpServer(
            self.servicer.core,
            self.key_check,
            live=lambda: self.live,
            ready=lambda: self.ready,
            config=self.config,
            tls=None if self.tls is None else (self.tls.cert, self.tls.key),
        )
        try:
            sock = _listening_socket(self.config.host, port)
        except OSError:
            why = _why_unbindable(self.config.host, port)
            raise ServeError(f"cannot bind HTTP {self.config.host}:{port}: {why}") from None
        self.http_port = await self.http.start(sock)
        scheme = "https" if self.tls else "http"
        log.info("HTTP API on %s://%s:%d", scheme, self.config.host, self.http_port)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within `grace` seconds."""
        grace = self.config.grace_seconds if grace is None else grace
        self.health_metrics.ready.set(0)
        self.ready = self.live = False
        await self.health.enter_graceful_shutdown()
        log.info("shutting down: in-flight calls have %.0f s to finish", grace)
        stopping = [self.grpc.stop(grace)]
        if self.http is not None:
            stopping.append(self.http.stop(grace))
        await asyncio.gather(*stopping)
        if self.batches is not None:  # stopped where they are: they resume on restart
            await self.batches.stop()
        engine = self.pipe.async_engine
        if self._engine_failed in engine.on_failure:
            engine.on_failure.remove(self._engine_failed)
        await engine.stop()
        self.metrics.stop_http()
        log.info("stopped")


def _reason(err: BaseException) -> str:
    if isinstance(err, EngineFailedError):
        return err.reason
    if isinstance(err, ServeError):
        return str(err)
    return f"{type(err).__name__}: {err}"


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def _listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to HOST:PORT for the HTTP API (uvicorn listens on it); OSError if
    the port is taken. SO_REUSEADDR only: a second server on the port must still fail."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _why_unbindable(host: str, port: int) -> str:
    """Why gRPC could not bind HOST:PORT, found by binding a plain socket there."""
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM)
    except OSError as err:
        return f"cannot resolve {host!r}: {err}"
    for family, kind, proto, _, addr in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.bind(addr)
            except OSError as err:
                if err.errno == errno.EADDRINUSE:
                    return f"port {port} is already in use (is another server running?)"
                return f"{err.strerror or err} (port {port})"
    return f"gRPC could not bind port {port} (GRPC_VERBOSITY=debug says why)"


# -- what every call goes through: malformed bytes and a dead engine --------------------


class _Malformed:
    """What the request deserializer returns for bytes that do not decode."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Guard(grpc.aio.ServerInterceptor):
    """Malformed request bytes -> INVALID_ARGUMENT (counted, logged rate-limited) instead
    of gRPC's UNKNOWN with an ERROR line each; a call that fails because the engine died
    -> UNAVAILABLE "engine failed: <reason>" instead of INTERNAL.

    Wraps the unary-request handlers whose behaviour is a coroutine or an async generator
    (every GenerationService method, health Check and Watch); others pass unchanged.
    """

    def __init__(self, metrics: ServerHealthMetrics) -> None:
        self.metrics = metrics
        self.malformed_log = FailureLog(
            what="malformed request(s) answered INVALID_ARGUMENT", logger=log
        )

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        deserialize = handler.request_deserializer
        kwargs = {
            "request_deserializer": _safe(deserialize),
            "response_serializer": handler.response_serializer,
        }
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
        make = (
            grpc.unary_stream_rpc_method_handler
            if handler.response_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        if inspect.isasyncgenfunction(behavior):  # yields its responses

            async def generator(request, context):
                await self._check(request, context, method)
                inner = behavior(request, _EngineStatusContext(context))
                async with contextlib.aclosing(inner):
                    async for response in inner:
                        yield response

            return make(generator, **kwargs)
        if inspect.iscoroutinefunction(behavior):  # returns its response or writes them

            async def coroutine(request, context):
                await self._check(request, context, method)
                return await behavior(request, _EngineStatusContext(context))

            return make(coroutine, **kwargs)
        return handler

    async def _check(self, request, context, method: str) -> None:
        if isinstance(request, _Malformed):
            self.metrics.malformed_requests.labels(method).inc()
            self.malformed_log.note(str(request.error), method)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"malformed request: {request.error}"
            )


def _safe(deserialize):
    def safe(raw: bytes):
        try:
            return deserialize(raw)
        except Exception as err:  # protobuf's DecodeError, or worse
            return _Malformed(err)

    return safe


class _EngineStatusContext:
    """The call's context, except that an abort made while handling an engine failure
    answers UNAVAILABLE with the engine's reason (the servicer maps unknown errors to
    INTERNAL; a dead engine is not the caller's or the request's fault)."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code, details: str = "", trailing_metadata=()):
        failure = engine_failure(sys.exc_info()[1])
        if failure is not None:
            code, details = grpc.StatusCode.UNAVAILABLE, str(failure)
        await self._context.abort(code, details, trailing_metadata)


async def warm_up(pipe: Any) -> None:
    """Every tokenizer built (they load lazily) and one tiny request per output path, so
    the first real caller pays no first-call cost."""
    toks = pipe.bundle.tokenizers
    await asyncio.to_thread(lambda: [toks[key] for key in toks])
    vocab = pipe.vocab
    bos = vocab.special("<bos>")
    requests = [(TokenIdsPart([bos, bos]), TokensOutput(max_tokens=2), SamplingParams())]
    if pipe.engine_config.compile_decode:  # its compiles now, not on a caller's request
        greedy = SamplingParams(temperature=0.0)
        for ids in warm_up_prompts(vocab.size, pipe.engine_config.block_size):
            requests.append((TokenIdsPart(ids), TokensOutput(max_tokens=6), greedy))
    if "timeseries" in pipe.bundle.tokenizers:
        series = TimeSeriesPart([float(i % 4) for i in range(pipe.limits.timeseries_min_context)])
        requests.append((series, TimeSeriesOutput(horizon=2, num_samples=2), None))
    for prompt, output, sampling in requests:
        async for _ in pipe.astream(prompt, output, sampling, request_id="warmup"):
            pass


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (from now on, in the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T:
    """Await `work`; if `stop` is set first, cancel it and raise Interrupted."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task  # whatever the cancelled work raised on its way out does not matter
    raise Interrupted


async def serve_until_signal(server: Server, stop: asyncio.Event | None = None) -> None:
    """Start, serve until SIGTERM/SIGINT, then stop gracefully.

    A signal during start-up (loading, warm-up) stops at once and returns; a failed
    start-up, or an engine that dies while serving, stops the server and raises
    ServeError.
    """
    stop = stop_on_signals() if stop is None else stop
    try:
        await unless_stopped(stop, server.start())
    except Interrupted:
        log.info("signal received during start-up")
        await server.stop(0)
        return
    except BaseException:
        await server.stop(0)
        raise
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(server.failed.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
    if stop.is_set() or server.failure is None:
        log.info("signal received")
        await server.stop()
        return
    await server.stop(min(server.config.grace_seconds, FAILURE_GRACE_SECONDS))
    raise ServeError(f"engine failed: {_reason(server.failure)}")


def server_config_for(service_dir: str | Path | None, **overrides: Any) -> ServerConfig:
    """The "server" section of a service folder's service.json, with non-None overrides."""
    import json

    from mmntp.generation import default_service_dir

    path = Path(service_dir) if service_dir is not None else default_service_dir()
    data: dict[str, Any] = {}
    if (path / "service.json").is_file():
        data = dict(json.loads((path / "service.json").read_text()).get("server", {}))
    data.update({k: v for k, v in overrides.items() if v is not None})
    return ServerConfig.from_dict(data)
