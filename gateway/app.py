"""The FastAPI application: wiring only. Models load in the background so /health can say "loading"."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.engines.registry import Engines, build_engines
from gateway.errors import APIError, error_response, install_error_handlers
from gateway.gpu import GpuMonitor
from gateway.metrics import HTTPMetricsMiddleware, Metrics
from gateway.request_body import MULTIPART_OVERHEAD
from gateway.routers import health, openai_compat, read_stream, speech, transcribe, web
from gateway.routers import metrics as metrics_router
from gateway.routers import realtime as realtime_router
from gateway.routers import voice as voice_router
from gateway.security import install_inner, install_outer
from gateway.settings import Settings, get_settings

log = logging.getLogger(__name__)


class BodySizeLimit:
    """Refuse a declared Content-Length over the limit before reading a byte of it (and before the key
    check). Bodies without one (chunked) are counted as they arrive by the guard in gateway/limits.py."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                    err = APIError(
                        413,
                        "payload_too_large",
                        f"the request body is larger than the limit of {self.max_bytes} bytes",
                    )
                    await error_response(err)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class HeadAsGet:
    """HEAD answers like GET without the body (RFC 9110 9.3.2): FastAPI registers GET routes for GET only,
    which made HEAD /health a 405. The route sees a GET; only the body is dropped on the way out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        # A copy: the server reads the method from its own scope to know that no body may follow.
        inner = {**scope, "method": "GET"}
        try:
            await self.app(inner, receive, headers_only)
        finally:
            for key, value in inner.items():  # what routing added (the route, for the metrics' label)
                scope.setdefault(key, value)


def create_app(settings: Settings | None = None, engines: Engines | None = None) -> FastAPI:
    settings = settings or get_settings()
    engines = engines or build_engines(settings)
    metrics = Metrics()
    for collector in engines.collectors:
        metrics.registry.register(collector)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.started_at = time.monotonic()
        loader = asyncio.create_task(engines.start(), name="engine-loader")
        try:
            yield
        finally:
            loader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loader
            await engines.aclose()

    app = FastAPI(
        title="AetherPro Omni Voice Gateway",
        version=__version__,
        lifespan=lifespan,
        description="Read-aloud TTS, transcription and real-time spoken conversation.",
    )
    app.state.settings = settings
    app.state.engines = engines
    app.state.metrics = metrics
    app.state.gpu = GpuMonitor(settings.gpu_device)
    app.state.started_at = time.monotonic()
    install_error_handlers(app)
    for module in (health, speech, read_stream, transcribe, openai_compat, metrics_router, web, voice_router):
        app.include_router(module.router)
    app.include_router(realtime_router.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.add_middleware(HeadAsGet)  # innermost: the access log and metrics still say HEAD
    install_inner(app, settings)  # API keys, stream limits: innermost, see gateway/security
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    app.add_middleware(HTTPMetricsMiddleware, metrics=metrics)
    install_outer(app, settings)  # request ids + JSON access log, CORS: outermost
    return app
