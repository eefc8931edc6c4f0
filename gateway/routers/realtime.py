"""WS /v1/realtime: the OpenAI Realtime API over the /voice conversation core (docs/realtime.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.sessions.connection import serve_conversation
from gateway.sessions.realtime.session import RealtimeConnection
from gateway.sessions.realtime.wire import wants_beta

router = APIRouter(tags=["conversation"])


@router.websocket("/v1/realtime")
async def realtime(
    ws: WebSocket,
    engines: EnginesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    model: str | None = None,
    intent: str | None = None,
) -> None:
    offered = list(ws.scope.get("subprotocols") or ())
    # Browsers offer "realtime" (with the key and beta flags as further subprotocols) and fail the
    # handshake unless one comes back.
    await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
    beta = wants_beta({k.lower(): v for k, v in ws.headers.items()}, offered)
    await serve_conversation(
        ws,
        ws.app.state,
        settings.max_voice_sessions,
        lambda: RealtimeConnection(ws, engines, settings, metrics, beta=beta, intent=intent, model=model),
    )
