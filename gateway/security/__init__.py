"""Hardening wired onto the app: API keys, stream limits, request ids and JSON access logs, CORS.

All of it is pure ASGI middleware, so it covers HTTP and WebSocket routes alike, including routes that
are registered after this runs. See docs/hardening.md."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastapi import FastAPI
from prometheus_client import Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily

from gateway.limits import ConnectionRegistry, StreamLimiter, WebSocketGuard
from gateway.request_body import MULTIPART_OVERHEAD
from gateway.security.auth import APIKeyMiddleware
from gateway.security.keys import KeyStore
from gateway.settings import Settings

__all__ = ["install_inner", "install_outer"]


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # scraped off the event loop thread
        return 0.0


def _register_metrics(app: FastAPI, limiter: StreamLimiter, registry: ConnectionRegistry) -> None:
    reg = app.state.metrics.registry
    # RSS, CPU and open fds of the gateway process, for leak checks and capacity planning.
    ProcessCollector(registry=reg)
    Gauge(
        "voice_gateway_asyncio_tasks", "asyncio tasks alive in the gateway event loop", registry=reg
    ).set_function(_task_count)
    Gauge("voice_gateway_websocket_connections", "Open WebSocket connections", registry=reg).set_function(
        lambda: float(len(registry.connections))
    )
    Gauge(
        "voice_gateway_stream_slots_in_use",
        "Slots of MAX_STREAMS held: WebSocket sessions and HTTP POSTs in flight",
        registry=reg,
    ).set_function(lambda: float(limiter.total))
    reg.register(_LimitCollector(limiter, registry))


class _LimitCollector:
    """Counters read from the limiter's own tallies at scrape time: the limiter stays free of prometheus."""

    def __init__(self, limiter: StreamLimiter, registry: ConnectionRegistry) -> None:
        self.limiter = limiter
        self.registry = registry

    def collect(self) -> Iterator[CounterMetricFamily]:
        rejected = CounterMetricFamily(
            "voice_gateway_streams_rejected", "WebSocket sessions refused by a stream limit", labels=["limit"]
        )
        for limit in ("total", "per_key"):
            rejected.add_metric([limit], self.limiter.rejected[limit])
        yield rejected
        yield CounterMetricFamily(
            "voice_gateway_websocket_idle_closed",
            "WebSockets closed as idle",
            value=self.registry.closed_idle,
        )


def install_inner(app: FastAPI, settings: Settings) -> None:
    """Authentication, then stream limits (which count per key, so they run after auth)."""
    limiter = StreamLimiter(settings.max_streams, settings.max_streams_per_key)
    registry = ConnectionRegistry(settings.ws_idle_timeout_seconds)
    app.state.stream_limiter = limiter
    app.state.ws_registry = registry
    app.state.draining = False
    _register_metrics(app, limiter, registry)
    app.add_middleware(
        WebSocketGuard,
        limiter=limiter,
        registry=registry,
        send_timeout=settings.ws_send_timeout_seconds,
        max_body_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD,
        body_timeout=settings.http_body_timeout_seconds,
    )
    keys = KeyStore.from_settings(
        settings.api_keys.get_secret_value() if settings.api_keys else None, settings.api_keys_file
    )
    # The web page and its assets hold no data; the page sends the key on every API call it makes.
    open_paths = ["/health", "/"] + ([] if settings.metrics_require_auth else ["/metrics"])
    app.add_middleware(APIKeyMiddleware, keys=keys, open_paths=open_paths, open_prefixes=("/static/",))


def install_outer(app: FastAPI, settings: Settings) -> None:
    """Request ids and access logs around everything; CORS outermost so even a 401 carries its headers."""
    from fastapi.middleware.cors import CORSMiddleware

    from gateway.logging_setup import RequestContextMiddleware

    app.add_middleware(RequestContextMiddleware)
    origins = [o.strip() for o in settings.cors_allow_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "X-Audio-Duration",
                "X-Audio-Sample-Rate",
                "X-Generation-Seconds",
            ],
            max_age=600,
        )
