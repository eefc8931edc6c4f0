"""Every Prometheus family the gateway exports, on one registry per app, plus the HTTP middleware."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.engines.base import ModelInfo, ModelState
from gateway.gpu import GpuStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Conversation turns: fine steps from 50 ms to 10 s, where spoken replies live and an SLO bound is set
# (p95 from histogram_quantile is only as exact as the bucket edges around it); 20 s / 30 s catch a stall.
TURN_BUCKETS = (
    0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 20, 30,
)  # fmt: skip

# A voice turn's `response.done.timings` key (milliseconds) -> its `stage` label and the engine role whose
# name labels it (the stage's own engine: ASR time belongs to the transcriber, not to the conversation model).
TURN_STAGES: dict[str, tuple[str, str]] = {
    "first_audio_ms": ("first_audio", "responder"),
    "asr_ms": ("asr", "transcriber"),
    "llm_first_token_ms": ("llm_first_token", "responder"),
    "llm_first_sentence_ms": ("llm_first_sentence", "responder"),
    "tts_first_chunk_ms": ("tts_first_chunk", "synthesizer"),
}
BARGE_IN_STAGE = "barge_in_stop"


class WorkerRestarts:
    """Engine worker processes restarted after they died (`reason`: the signal, e.g. SIGSEGV, or `exit`,
    `timeout`). Process-wide, like the workers: the engines are built before any app's registry exists."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def inc(self, engine: str, reason: str) -> None:
        with self._lock:
            self._counts[(engine, reason)] = self._counts.get((engine, reason), 0) + 1

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "voice_gateway_engine_worker_restarts",
            "Engine worker processes restarted after a crash, by engine and reason",
            labels=["engine", "reason"],
        )
        with self._lock:
            counts = dict(self._counts)
        for (engine, reason), n in sorted(counts.items()):
            family.add_metric([engine, reason], n)
        yield family


ENGINE_WORKER_RESTARTS = WorkerRestarts()


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests_total = Counter(
            "voice_gateway_requests_total",
            "HTTP requests by method, route template and status code",
            ["method", "endpoint", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "voice_gateway_request_latency_seconds",
            "HTTP request latency (to the last byte)",
            ["method", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.audio_generation_latency = Histogram(
            "voice_gateway_audio_generation_latency_seconds",
            "Time the engine spent generating audio: kind=sentence per sentence, kind=request per request",
            ["engine", "kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.active_streams = Gauge(
            "voice_gateway_active_streams", "Open streaming sessions by kind", ["kind"], registry=r
        )
        self.gpu_utilization = Gauge(
            "voice_gateway_gpu_utilization_percent", "GPU utilization of GPU_DEVICE", ["gpu"], registry=r
        )
        self.gpu_memory_used = Gauge(
            "voice_gateway_gpu_memory_used_mb", "GPU memory used on GPU_DEVICE (MB)", ["gpu"], registry=r
        )
        self.gpu_memory_total = Gauge(
            "voice_gateway_gpu_memory_total_mb", "Memory of the GPU_DEVICE card (MB)", ["gpu"], registry=r
        )
        self.tokens_per_second = Gauge(
            "voice_gateway_tokens_per_second",
            "Text generation throughput of the last response",
            ["engine"],
            registry=r,
        )
        self.backend_up = Gauge(
            "voice_gateway_backend_up",
            "1 when a backend/model is ready to serve, else 0",
            ["backend"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "voice_gateway_turn_latency_seconds",
            "Per-turn latency of /voice and /v1/realtime replies by stage: first_audio (commit -> first "
            "reply audio), asr, llm_first_token, llm_first_sentence, tts_first_chunk, barge_in_stop "
            "(interruption -> reply audio stopped)",
            ["protocol", "engine", "stage"],
            buckets=TURN_BUCKETS,
            registry=r,
        )
        r.register(ENGINE_WORKER_RESTARTS)
        # Children that must exist before the first event, so dashboards show 0 rather than nothing.
        for kind in ("read_stream", "voice", "realtime"):
            self.active_streams.labels(kind=kind)

    def refresh(self, gpu: GpuStats, models: Iterable[ModelInfo]) -> None:
        """Update the gauges that mirror state read on demand (GPU, backend readiness)."""
        if gpu.available:
            self.gpu_utilization.labels(gpu=str(gpu.index)).set(gpu.utilization_percent or 0)
            self.gpu_memory_used.labels(gpu=str(gpu.index)).set(gpu.memory_used_mb or 0)
            # Left unset when NVML gives no total: the memory alert skips a series it cannot divide.
            if gpu.memory_total_mb:
                self.gpu_memory_total.labels(gpu=str(gpu.index)).set(gpu.memory_total_mb)
        for m in models:
            self.backend_up.labels(backend=m.role).set(1 if m.state is ModelState.READY else 0)

    def open_turn_series(self, protocol: str, engines: Mapping[str, str]) -> None:
        """Create a conversation's label sets at zero before its first turn: rate() and increase() only
        count an observation that a scraped sample precedes, so a series born on its first turn loses it."""
        for stage, role in (*TURN_STAGES.values(), (BARGE_IN_STAGE, "responder")):
            self.turn_latency.labels(protocol=protocol, engine=engines[role], stage=stage)

    def observe_turn(
        self, protocol: str, timings: Mapping[str, float | None], engines: Mapping[str, str]
    ) -> None:
        """One reply's stage latencies, from its finished `response.done.timings`; `engines` maps a role
        (responder, transcriber, synthesizer) to its engine name. Stages a reply never reached are skipped."""
        for key, (stage, role) in TURN_STAGES.items():
            ms = timings.get(key)
            if ms is not None:
                self.turn_latency.labels(protocol=protocol, engine=engines[role], stage=stage).observe(
                    ms / 1000
                )

    def observe_barge_in(self, protocol: str, engine: str, seconds: float) -> None:
        self.turn_latency.labels(protocol=protocol, engine=engine, stage=BARGE_IN_STAGE).observe(seconds)


class HTTPMetricsMiddleware:
    """Pure ASGI so streaming responses are timed to their last byte; labels use the route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            endpoint = _route_template(scope)
            method = scope.get("method", "GET")
            self.metrics.requests_total.labels(method=method, endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_latency.labels(method=method, endpoint=endpoint).observe(
                time.perf_counter() - start
            )


def _route_template(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label: raw URLs would let any client explode the series count.
    return path if isinstance(path, str) else "unmatched"
