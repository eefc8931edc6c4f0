"""WS /voice: full-duplex spoken conversation (protocol in docs/voice.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.sessions.connection import serve_conversation
from gateway.sessions.voice.protocol import VoiceConnection

router = APIRouter(tags=["conversation"])


@router.websocket("/voice")
async def voice(ws: WebSocket, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep) -> None:
    await ws.accept()
    await serve_conversation(
        ws, ws.app.state, settings.max_voice_sessions, lambda: VoiceConnection(ws, engines, settings, metrics)
    )
