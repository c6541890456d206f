"""`mmntp serve`: the gRPC server (grpc.aio) around one pipeline.

Start-up order: load the service, build the server with health NOT_SERVING, bind, warm
the engine up with one tiny request per output modality, then report SERVING. SIGTERM
(or SIGINT) marks health NOT_SERVING, stops taking calls, lets in-flight streams finish
within the grace period, then returns so the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mmntp.api import SamplingParams, TimeSeriesOutput, TimeSeriesPart, TokenIdsPart, TokensOutput
from mmntp.engine.compiled_decode import warm_up_prompts
from mmntp.serve.auth import ApiKeyInterceptor
from mmntp.serve.metrics import ServiceMetrics
from mmntp.serve.servicer import GenerationServicer
from mmntp.v1 import generation_pb2 as pb
from mmntp.v1 import generation_pb2_grpc

log = logging.getLogger("mmntp.serve")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GenerationService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


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

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"server.port must be in [0, 65535], got {self.port}")
        for name in ("max_message_bytes", "max_concurrent_rpcs"):
            if getattr(self, name) < 1:
                raise ValueError(f"server.{name} must be positive, got {getattr(self, name)}")
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
        pair = (self.key.read_bytes(), self.cert.read_bytes())
        return grpc.ssl_server_credentials([pair])


@dataclass
class Server:
    """A built, not yet started, server; `start()` binds, warms up and reports SERVING."""

    pipe: Any
    config: ServerConfig
    api_keys: list[str] = field(default_factory=list)
    tls: TlsFiles | None = None
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        self.metrics = ServiceMetrics(self.pipe)
        self.health = health.aio.HealthServicer()
        interceptors = [ApiKeyInterceptor(self.api_keys)] if self.api_keys else []
        self.grpc = grpc.aio.server(
            interceptors=interceptors,
            options=self.config.grpc_options(),
            maximum_concurrent_rpcs=self.config.max_concurrent_rpcs,
        )
        generation_pb2_grpc.add_GenerationServiceServicer_to_server(
            GenerationServicer(self.pipe, self.metrics), self.grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        names = (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, self.grpc)
        self.port: int | None = None

    async def start(self) -> int:
        """Bind, warm up, report SERVING; returns the bound port (port 0 picks a free one)."""
        for name in ("", SERVICE_NAME):
            await self.health.set(name, NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        if self.tls is None:
            self.port = self.grpc.add_insecure_port(address)
        else:
            self.port = self.grpc.add_secure_port(address, self.tls.credentials())
        if self.port == 0:
            raise OSError(f"could not bind {address}")
        await self.grpc.start()
        if self.metrics_port is not None:
            bound = self.metrics.start_http(self.metrics_port, addr=self.config.host)
            log.info("metrics on http://%s:%d/metrics", self.config.host, bound)
        if self.config.warmup:
            await warm_up(self.pipe)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, SERVING)
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

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, refuse new calls, let in-flight ones finish within `grace` seconds."""
        grace = self.config.grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        log.info("shutting down: in-flight calls have %.0f s to finish", grace)
        await self.grpc.stop(grace)
        await self.pipe.async_engine.stop()
        self.metrics.stop_http()
        log.info("stopped")


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


async def serve_until_signal(server: Server) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully."""
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received")
    await server.stop()


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
