"""`voice-gateway engine-server`: the embedded CPU engines behind vLLM-Omni's HTTP API.

(a) the model server of the CPU mode (clusters and laptops without GPUs): point the gateway's
`OMNI_SERVICE_URL` and `TTS_SERVICE_URL` at it with `VOICE_ENGINE=vllm-omni`; (b) the real backend the
`vllm-omni` engine's contract tests run against. Shapes follow the fact sheet (docs/vllm-omni.md); where
this server and vLLM-Omni would differ, vLLM-Omni's shape is the one implemented.

Like vLLM, it loads every model *before* it listens: while loading, connections are refused (fact sheet §6
"Readiness"); afterwards `/health` is 200 `{"status":"healthy"}`, or 503 `{"status":"unhealthy"}` when a
model failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import __version__
from gateway.engine_server import chat, errors, speech
from gateway.engine_server.models import EngineSet
from gateway.engines.vllm_omni.protocol import WIRE_VERSION_TEXT, models_response

log = logging.getLogger(__name__)

# vLLM-Omni 0.30.0 metrics/definitions.py SECONDS_BUCKETS: the buckets of its e2e and first-packet histograms.
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
# The stage that emits audio in the real pipelines (vLLM-Omni's `stage` label is the stage's index in the
# deploy config): Qwen3-TTS talker 0 -> code2wav 1; Qwen3-Omni thinker 0 -> talker 1 -> code2wav 2.
AUDIO_STAGE = {"omni": "2", "tts": "1"}


class ServerMetrics:
    """The vLLM-Omni 0.30.0 families the gateway's dashboards read, named and labelled as the real server
    exposes them (metrics/prometheus.py, modality.py, stat_logger.py; checked against a real server by
    tests/real_vllm_omni/test_metrics_names.py).

    Pipeline families (`vllm_omni:*`) carry `model_name`; the per-stage ones (`vllm_omni:audio_ttfp_s`, and
    upstream vLLM's `vllm:*`, relabelled from `engine`) carry `model_name`, `stage`, `replica`. One engine
    server plays both model servers, so `model_name` tells them apart. Callers name the role ("omni" /
    "tts"); `ttfp.labels(stage=role)` maps it onto the real labels.
    """

    def __init__(self, omni_name: str, tts_name: str) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._names = {"omni": omni_name, "tts": tts_name}
        self.running_gauge = Gauge(
            "vllm_omni:num_requests_running",
            "Number of requests currently running across all pipeline stages.",
            ["model_name"],
            registry=r,
        )
        # no scheduler here: every request runs at once, so nothing ever waits (the real server exports it)
        self.waiting_gauge = Gauge(
            "vllm_omni:num_requests_waiting",
            "Number of requests waiting to be scheduled.",
            ["model_name"],
            registry=r,
        )
        self.success = Counter(
            "vllm_omni:requests_success",
            "Total requests by completion reason (stop / length / abort / ...).",
            ["model_name", "finished_reason"],
            registry=r,
        )
        self.e2e = Histogram(
            "vllm_omni:e2e_request_latency_s",
            "Pipeline-global end-to-end request latency in seconds (user arrival to complete response).",
            ["model_name"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.audio_ttfp = Histogram(
            "vllm_omni:audio_ttfp_s",
            "Time from request arrival to first audio packet/frame, in seconds.",
            ["model_name", "stage", "replica"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            "vllm_omni:prompt_tokens",
            "Total prompt (input) tokens processed across all pipeline stages.",
            ["model_name"],
            registry=r,
        )
        self.generation_tokens = Counter(
            "vllm_omni:generation_tokens",
            "Total generation (output) tokens produced across all pipeline stages.",
            ["model_name"],
            registry=r,
        )
        for name in self._names.values():
            # the real server binds these at start-up: they have a sample before the first request
            self.running_gauge.labels(model_name=name)
            self.waiting_gauge.labels(model_name=name)
            self.e2e.labels(model_name=name)
            self.prompt_tokens.labels(model_name=name)
            self.generation_tokens.labels(model_name=name)
        self.ttfp = _RoleTtfp(self.audio_ttfp, self._names)

    @contextlib.contextmanager
    def running(self, role: str) -> Iterator[None]:
        gauge = self.running_gauge.labels(model_name=self._names[role])
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def finished(self, role: str, seconds: float, prompt: int = 0, generated: int = 0) -> None:
        name = self._names[role]
        self.success.labels(model_name=name, finished_reason="stop").inc()
        self.e2e.labels(model_name=name).observe(seconds)
        self.prompt_tokens.labels(model_name=name).inc(prompt)
        self.generation_tokens.labels(model_name=name).inc(generated)


class _RoleTtfp:
    """`ttfp.labels(stage=role)`: the audio stage's `vllm_omni:audio_ttfp_s` child for a role."""

    def __init__(self, histogram: Histogram, names: dict[str, str]) -> None:
        self._histogram = histogram
        self._names = names

    def labels(self, stage: str) -> Histogram:
        return self._histogram.labels(model_name=self._names[stage], stage=AUDIO_STAGE[stage], replica="0")


class ApiKeyAuth:
    """vLLM's `--api-key`: every `/v1` route needs `Authorization: Bearer <key>`, else 401
    `{"error": "Unauthorized"}`; /health, /metrics, /version and /ping stay open."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("path", "").startswith("/v1"):
            given = dict(scope.get("headers", ())).get(b"authorization", b"")
            if scope.get("method") != "OPTIONS" and not hmac.compare_digest(given, self.expected):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await JSONResponse({"error": "Unauthorized"}, status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_engine_app(engine_set: EngineSet, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="voice-gateway engine server (vLLM-Omni API on CPU)", version=__version__)
    app.state.engine_set = engine_set
    app.state.uploaded_voices = {}
    app.state.server_metrics = ServerMetrics(engine_set.omni_name, engine_set.tts_name)
    app.state.started = time.time()
    errors.install(app)
    app.include_router(chat.router)
    app.include_router(speech.router)

    @app.get("/health")
    async def health() -> Response:
        if engine_set.failed:
            return JSONResponse({"status": "unhealthy", "failed": engine_set.failed}, status_code=503)
        if not engine_set.ready:
            return JSONResponse({"reason": "No engine initialized"}, status_code=503)
        return JSONResponse({"status": "healthy"})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return models_response([engine_set.omni_name, engine_set.tts_name], created=int(app.state.started))

    @app.get("/version")
    async def version() -> dict[str, str]:
        # vLLM's `/version` names the release whose wire format the server speaks: this one speaks
        # vLLM-Omni 0.30.0's. `engine_server` (ours, not vLLM's) says which gateway build it is.
        return {"version": WIRE_VERSION_TEXT, "engine_server": __version__}

    @app.get("/ping")
    async def ping() -> Response:
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(
            generate_latest(request.app.state.server_metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    if api_key:
        app.add_middleware(ApiKeyAuth, key=api_key)
    return app


async def serve(
    engine_set: EngineSet, host: str, port: int, log_level: str, api_key: str | None = None
) -> None:
    """Load, then listen (so clients see refused connections while loading, as with vLLM-Omni)."""
    import uvicorn

    t0 = time.perf_counter()
    await engine_set.start()
    log.info("engine-server models loaded in %.1f s", time.perf_counter() - t0)
    app = create_engine_app(engine_set, api_key)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    try:
        await uvicorn.Server(config).serve()
    finally:
        await engine_set.aclose()


def run(
    settings: Any, host: str, port: int, omni_name: str, tts_name: str, api_key: str | None = None
) -> None:
    engine_set = EngineSet(settings, omni_name=omni_name, tts_name=tts_name)
    asyncio.run(serve(engine_set, host, port, settings.log_level, api_key))
