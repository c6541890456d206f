"""Service metrics (Prometheus, on a registry of its own) and the structured request log.

Latency histograms are observed by the servicer per request; the engine gauges (running,
waiting, KV-cache usage) are read from the engine when Prometheus scrapes, so they are
never stale. One JSON line per request goes to the `mmntp.requests` logger.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

request_log = logging.getLogger("mmntp.requests")

# Seconds: CPU decode steps are milliseconds, whole forecasts seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class EngineCollector(Collector):
    """Engine gauges, read from `pipe.engine` at scrape time."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def collect(self):
        running = GaugeMetricFamily("mmntp_requests_running", "Engine requests running")
        waiting = GaugeMetricFamily("mmntp_requests_waiting", "Engine requests waiting")
        usage = GaugeMetricFamily("mmntp_kv_cache_usage", "Fraction of KV-cache blocks in use")
        hits = GaugeMetricFamily(
            "mmntp_prefix_cache_hit_rate", "Prefix-cache hit tokens / looked-up tokens"
        )
        engine = self.pipe.engine
        running.add_metric([], engine.stats.num_running)
        waiting.add_metric([], engine.stats.num_waiting)
        usage.add_metric([], engine.kv.usage)
        hits.add_metric([], engine.kv.prefix_cache_hit_rate)
        yield from (running, waiting, usage, hits)


class ServiceMetrics:
    """The service's Prometheus metrics; `registry` is what the /metrics endpoint serves."""

    def __init__(self, pipe: Any | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.time_to_first_chunk = Histogram(
            "mmntp_time_to_first_chunk_seconds",
            "Arrival to the first response sent",
            ["modality"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.inter_chunk_latency = Histogram(
            "mmntp_inter_chunk_latency_seconds",
            "Time between consecutive responses of one stream",
            ["modality"],
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.queue_time = Histogram(
            "mmntp_queue_time_seconds",
            "Arrival to the first engine step of the request",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.e2e_latency = Histogram(
            "mmntp_e2e_latency_seconds",
            "Arrival to the end of the call",
            ["modality"],
            registry=r,
            buckets=_E2E_BUCKETS,
        )
        self.requests = Counter(
            "mmntp_requests",
            "Generate calls by output modality and gRPC status",
            ["modality", "status"],
            registry=r,
        )
        self.rejections = Counter(
            "mmntp_admission_rejections",
            "Generate calls refused RESOURCE_EXHAUSTED, by the limit hit: max_waiting_requests,"
            " max_waiting_tokens (the engine's queue), concurrency or rate (the key's quota)",
            ["reason"],
            registry=r,
        )
        self.idle_streams = Counter(
            "mmntp_idle_streams_aborted",
            "Streams ended because the client read nothing for idle_stream_seconds",
            registry=r,
        )
        if pipe is not None:
            r.register(EngineCollector(pipe))
        self._http = None

    def start_http(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on a daemon thread; returns the bound port (port 0 picks one)."""
        self._http, _ = start_http_server(port, addr=addr, registry=self.registry)
        return self._http.server_port

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def track(self, request_id: str, modality: str) -> RequestRecord:
        return RequestRecord(self, request_id, modality)


@dataclass
class RequestRecord:
    """One Generate call's timeline; `finish` observes the metrics and writes the log line."""

    metrics: ServiceMetrics
    request_id: str
    modality: str  # "unknown" until the request is validated
    key: str = "anonymous"  # the caller's key id (quotas.key_id), never the key
    arrival: float = field(default_factory=time.monotonic)
    first_chunk: float | None = None
    last_chunk: float | None = None
    queue_seconds: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str | None = None
    done: bool = False

    def sent(self) -> float:
        """Mark a response as sent; returns seconds since arrival."""
        now = time.monotonic()
        if self.first_chunk is None:
            self.first_chunk = now
            self.metrics.time_to_first_chunk.labels(self.modality).observe(now - self.arrival)
        else:
            self.metrics.inter_chunk_latency.labels(self.modality).observe(now - self.last_chunk)
        self.last_chunk = now
        return now - self.arrival

    def finish(self, status: str) -> None:
        """Record the call's end with its gRPC status name ("OK", "INVALID_ARGUMENT", ...)."""
        if self.done:
            return
        self.done = True
        total = time.monotonic() - self.arrival
        m = self.metrics
        m.requests.labels(self.modality, status).inc()
        m.e2e_latency.labels(self.modality).observe(total)
        if self.queue_seconds is not None:
            m.queue_time.observe(self.queue_seconds)
        ttfc = None if self.first_chunk is None else self.first_chunk - self.arrival
        line = {
            "id": self.request_id,
            "key": self.key,
            "modality": self.modality,
            "status": status,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "queue": _round(self.queue_seconds),
            "time_to_first_chunk": _round(ttfc),
            "total": _round(total),
        }
        request_log.info(json.dumps(line))


def _round(seconds: float | None) -> float | None:
    return None if seconds is None or not math.isfinite(seconds) else round(seconds, 6)


# -- Server health, authentication and malformed requests (issue 29) --------------------
# Owned by serve/server.py and serve/auth.py; kept apart from the request metrics above.


class ServerHealthMetrics:
    """Readiness, engine failures, refused authentications and undecodable requests."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Gauge

        self.ready = Gauge(
            "mmntp_ready", "1 while readiness reports SERVING, else 0", registry=registry
        )
        self.engine_failures = Counter(
            "mmntp_engine_failures",
            "Fatal failures by stage: load (tokenizers), warmup, engine (a step raised)",
            ["reason"],
            registry=registry,
        )
        self.auth_failures = Counter(
            "mmntp_auth_failures",
            "Calls refused for a missing or invalid API key",
            ["reason"],
            registry=registry,
        )
        self.malformed_requests = Counter(
            "mmntp_malformed_requests",
            "Requests whose bytes do not decode as the method's protobuf message",
            ["method"],
            registry=registry,
        )
