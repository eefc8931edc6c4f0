"""WS /voice: full-duplex spoken conversation (protocol in docs/voice.md)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.sessions.voice.protocol import VoiceConnection, refuse, session_slots

router = APIRouter(tags=["conversation"])


@router.websocket("/voice")
async def voice(ws: WebSocket, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep) -> None:
    await ws.accept()
    slots = session_slots(ws.app.state, settings.max_voice_sessions)
    if not slots.try_acquire():
        await refuse(ws, slots.limit)
        return
    try:
        await VoiceConnection(ws, engines, settings, metrics).serve()
    finally:
        slots.release()
