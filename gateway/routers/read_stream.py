"""WS /read/stream: streaming read-aloud with pause, resume, cancel and text marks (docs/read-stream.md)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.sessions.read_stream import ConnectionGone, ReadStreamSession

log = logging.getLogger(__name__)

router = APIRouter(tags=["read-aloud"])


@router.websocket("/read/stream")
async def read_stream(ws: WebSocket, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep) -> None:
    await ws.accept()
    session = ReadStreamSession(
        engines.synthesizer,
        ws,
        metrics=metrics,
        max_text_chars=settings.max_text_chars,
        min_speed=settings.min_speed,
        max_speed=settings.max_speed,
    )
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is not None:
                await session.receive_text(message["text"])
            elif message.get("bytes") is not None:
                await session.receive_bytes(message["bytes"])
    except (WebSocketDisconnect, ConnectionGone):
        log.debug("read stream client left")
    finally:
        # Whatever ended the connection, the stream's tasks end with it.
        await session.aclose()
