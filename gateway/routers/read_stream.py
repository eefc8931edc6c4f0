"""WS /read/stream: streaming read-aloud with pause, resume, cancel and text marks (docs/read-stream.md)."""

from __future__ import annotations

import os

from fastapi import APIRouter, WebSocket
from starlette.datastructures import State

from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.engines.registry import Engines
from gateway.schemas import SPEED_MAX, SPEED_MIN
from gateway.sessions.read_stream import ReadStreamSession, SynthesisScheduler

router = APIRouter(tags=["read-aloud"])


def _scheduler(state: State, engines: Engines) -> SynthesisScheduler | None:
    """One per app. Only the embedded engine shares this machine's cores; a remote engine queues and
    batches on its own side, so the gateway does not hold its requests back."""
    if engines.kind != "embedded":
        return None
    scheduler = getattr(state, "read_stream_scheduler", None)
    if scheduler is None:
        scheduler = state.read_stream_scheduler = SynthesisScheduler(os.cpu_count() or 1)
    return scheduler


@router.websocket("/read/stream")
async def read_stream(ws: WebSocket, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep) -> None:
    await ws.accept()
    session = ReadStreamSession(
        engines.synthesizer,
        ws,
        metrics=metrics,
        max_text_chars=settings.max_text_chars,
        min_speed=SPEED_MIN,
        max_speed=SPEED_MAX,
        scheduler=_scheduler(ws.app.state, engines),
    )
    await session.serve()
