"""The `/voice` wire protocol: a thin adapter between a WebSocket and the conversation core.

It alone knows event names and JSON shapes (docs/voice.md): it decodes client messages into calls on
`VoiceSession` (one handler per event family) and encodes the core's events. A second protocol (OpenAI
Realtime) is another adapter of this size over the same core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Protocol

from gateway.engines.registry import Engines
from gateway.metrics import Metrics
from gateway.sessions.voice.errors import VoiceError, from_exception
from gateway.sessions.voice.events import (
    AudioOut,
    ErrorEvent,
    Interrupted,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    TextDelta,
    Transcript,
    TurnCommitted,
    VoiceEvent,
)
from gateway.sessions.voice.session import VoiceSession
from gateway.settings import Settings

log = logging.getLogger(__name__)

GAUGE_KIND = "voice"
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL_ERROR = 1011


class Transport(Protocol):
    """What the adapter needs from a connection; Starlette's WebSocket satisfies it as is."""

    async def send_json(self, data: Any) -> None: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def send_text(self, data: str) -> None: ...

    async def receive(self) -> Any: ...

    async def close(self, code: int = 1000, reason: str | None = None) -> None: ...


# -- encoding: core event -> wire ----------------------------------------------------------------------


def encode(event: VoiceEvent) -> dict[str, Any] | bytes:
    match event:
        case AudioOut(pcm=pcm):
            return pcm
        case SpeechStarted():
            return {"type": "speech.started", **asdict(event)}
        case SpeechStopped():
            return {"type": "speech.stopped", **asdict(event)}
        case TurnCommitted():
            return {"type": "audio.committed", **asdict(event)}
        case Transcript():
            return {"type": "transcript", **asdict(event)}
        case ResponseStarted():
            return {"type": "response.started", **asdict(event)}
        case TextDelta(response_id=rid, text=text):
            return {"type": "response.text.delta", "response_id": rid, "delta": text}
        case Interrupted(text_kept=kept):
            body = {k: v for k, v in asdict(event).items() if k != "text_kept"}
            return {"type": "interrupted", **body, "text": kept}
        case ResponseDone():
            body = {k: v for k, v in asdict(event).items() if k != "segments"}
            return {"type": "response.done", **body}
        case ErrorEvent():
            return {"type": "error", **asdict(event)}
    raise TypeError(f"no wire form for {event!r}")


# -- the connection ---------------------------------------------------------------------------------------


class VoiceConnection:
    def __init__(self, ws: Transport, engines: Engines, settings: Settings, metrics: Metrics | None) -> None:
        self.ws = ws
        self.engines = engines
        self.settings = settings
        self.metrics = metrics
        self._lock = asyncio.Lock()  # one writer at a time: events and audio frames stay whole and ordered
        self._gone = False
        self.session = VoiceSession(engines, settings, self.emit, metrics)
        # Word timings (free with Piper) let barge-in keep exactly the words whose audio went out.
        self.session.word_timings = True
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            # input audio family
            "audio.commit": self._on_audio_commit,
            "audio.clear": self._on_audio_clear,
            # response family
            "interrupt": self._on_interrupt,
            # session family
            "session.update": self._on_session_update,
            "ping": self._on_ping,
        }

    # -- output ----------------------------------------------------------------------------------------
    async def _write(self, message: dict[str, Any] | bytes) -> None:
        if self._gone:
            return
        try:
            async with self._lock:
                if isinstance(message, bytes):
                    await self.ws.send_bytes(message)
                else:
                    # ASCII-escaped: an echoed client string (a ping id) may hold a lone surrogate, which
                    # UTF-8 cannot encode; that used to drop the connection (bench/fuzz_ws.py).
                    await self.ws.send_text(json.dumps(message, separators=(",", ":")))
        except Exception:  # the client is gone; the receive loop sees the disconnect and cleans up
            self._gone = True

    async def emit(self, event: VoiceEvent) -> None:
        await self._write(encode(event))

    async def error(self, code: str, message: str) -> None:
        await self._write({"type": "error", "code": code, "message": message})

    def _session_body(self) -> dict[str, Any]:
        cfg = self.session.config
        return {
            **cfg.model_dump(),
            "input_audio": {"format": "pcm_s16le", "sample_rate": self.session.sample_rate, "channels": 1},
            "output_audio": {"format": "pcm_s16le", "sample_rate": self.session.sample_rate, "channels": 1},
            "limits": {
                "max_input_seconds": self.settings.voice_max_input_seconds,
                "max_response_tokens": self.settings.voice_max_response_tokens,
                "history_turns": self.settings.voice_history_turns,
                "history_tokens": self.settings.voice_history_tokens,
            },
        }

    # -- input -----------------------------------------------------------------------------------------
    async def _guard(self, call: Awaitable[None]) -> None:
        """Run one client request; a client-side problem becomes an `error` event, the socket stays open."""
        try:
            await call
        except Exception as exc:
            err = from_exception(exc)
            if err is None:
                log.exception("voice request failed")
                err = VoiceError("internal_error", "the request failed on the server")
            await self.error(err.code, err.message)

    async def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            await self.error(
                "invalid_json", f"text frames must be JSON objects: {exc.msg} at position {exc.pos}"
            )
            return
        except RecursionError:  # deeply nested arrays (bench/fuzz_ws.py)
            await self.error("invalid_json", "text frames must be JSON objects: nested too deeply")
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error("invalid_event", 'a control message is a JSON object with a string "type"')
            return
        handler = self._handlers.get(message["type"])
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            await self.error("unknown_event", f"unknown event type {message['type']!r}; known: {known}")
            return
        await self._guard(handler(message))

    async def _on_audio_commit(self, _: dict[str, Any]) -> None:
        await self.session.commit()

    async def _on_audio_clear(self, _: dict[str, Any]) -> None:
        self.session.clear_audio()
        await self._write({"type": "audio.cleared"})

    async def _on_interrupt(self, _: dict[str, Any]) -> None:
        if not await self.session.interrupt("client"):
            raise VoiceError("no_active_response", "there is no reply to interrupt")

    async def _on_session_update(self, message: dict[str, Any]) -> None:
        self.session.update(message.get("session", {}))
        await self._write({"type": "session.updated", "session": self._session_body()})

    async def _on_ping(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong"}
        if "id" in message:
            reply["id"] = message["id"]
        await self._write(reply)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def serve(self) -> None:
        if self.engines.responder is None:
            await self.error(
                "engine_unavailable", f"the {self.engines.kind} engine has no conversation model"
            )
            await self.ws.close(code=CLOSE_INTERNAL_ERROR, reason="no conversation model")
            return
        gauge = self.metrics.active_streams.labels(kind=GAUGE_KIND) if self.metrics is not None else None
        if gauge is not None:
            gauge.inc()
        try:
            if self.session.config.turn_detection.enabled:
                from gateway.audio import vad

                await asyncio.to_thread(vad.load)  # the first session pays the model load off the loop
            await self._write({"type": "session.created", "session": self._session_body()})
            while not self._gone:
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes") is not None:
                    await self._guard(self.session.append_audio(message["bytes"]))
                elif message.get("text") is not None:
                    await self._on_text(message["text"])
        finally:
            self._gone = True
            await self.session.close()  # cancels the reply; history and audio are dropped
            if gauge is not None:
                gauge.dec()


# -- admission ---------------------------------------------------------------------------------------------


class SessionSlots:
    """A process-wide cap on concurrent conversations: each one holds CPU (or GPU) for the models."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_acquire(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)


def session_slots(state: Any, limit: int) -> SessionSlots:
    """The app's one SessionSlots (created on first use), shared by every conversation protocol."""
    slots = getattr(state, "conversation_slots", None)
    if slots is None:
        slots = SessionSlots(limit)
        state.conversation_slots = slots
    return slots


async def refuse(ws: Transport, limit: int) -> None:
    reason = f"too many concurrent voice sessions (limit {limit}); try again later"
    with contextlib.suppress(Exception):
        await ws.send_json({"type": "error", "code": "too_many_sessions", "message": reason})
        await ws.close(code=CLOSE_TRY_AGAIN_LATER, reason=reason)
