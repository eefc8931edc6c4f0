"""The `/voice` wire protocol: a thin adapter between a WebSocket and the conversation core.

It alone knows event names and JSON shapes (docs/voice.md): it decodes client messages into calls on
`VoiceSession` (one handler per event family) and encodes the core's events. A second protocol (OpenAI
Realtime) is another adapter of this size over the same core. The socket itself (writes, serve loop,
admission) is the shared connection base, gateway/sessions/connection.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from gateway.engines.registry import Engines
from gateway.errors import GatewayError, from_engine_error, internal_error
from gateway.metrics import Metrics
from gateway.sessions.connection import Transport, WebSocketConnection
from gateway.sessions.voice.errors import VoiceError
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


class VoiceConnection(WebSocketConnection):
    gauge_kind = "voice"

    def __init__(self, ws: Transport, engines: Engines, settings: Settings, metrics: Metrics | None) -> None:
        super().__init__(ws, metrics)
        self.engines = engines
        self.settings = settings
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
    async def emit(self, event: VoiceEvent) -> None:
        await self.write(encode(event))

    async def error(self, err: GatewayError) -> None:
        """The /voice edge of the error tree: the core's error event, code and message only."""
        await self.emit(ErrorEvent(err.code, err.message))

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
            err = from_engine_error(exc)
            if err is None:
                log.exception("voice request failed")
                err = internal_error("the request failed on the server")
            await self.error(err)

    async def receive_bytes(self, data: bytes) -> None:
        await self._guard(self.session.append_audio(data))

    async def receive_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            await self.emit(
                ErrorEvent(
                    "invalid_json", f"text frames must be JSON objects: {exc.msg} at position {exc.pos}"
                )
            )
            return
        except RecursionError:  # deeply nested arrays (bench/fuzz_ws.py)
            await self.emit(ErrorEvent("invalid_json", "text frames must be JSON objects: nested too deeply"))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.emit(
                ErrorEvent("invalid_event", 'a control message is a JSON object with a string "type"')
            )
            return
        handler = self._handlers.get(message["type"])
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            await self.emit(
                ErrorEvent("unknown_event", f"unknown event type {message['type']!r}; known: {known}")
            )
            return
        await self._guard(handler(message))

    async def _on_audio_commit(self, _: dict[str, Any]) -> None:
        await self.session.commit()

    async def _on_audio_clear(self, _: dict[str, Any]) -> None:
        self.session.clear_audio()
        await self.write({"type": "audio.cleared"})

    async def _on_interrupt(self, _: dict[str, Any]) -> None:
        if not await self.session.interrupt("client"):
            raise VoiceError("no_active_response", "there is no reply to interrupt")

    async def _on_session_update(self, message: dict[str, Any]) -> None:
        self.session.update(message.get("session", {}))
        await self.write({"type": "session.updated", "session": self._session_body()})

    async def _on_ping(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong"}
        if "id" in message:
            reply["id"] = message["id"]
        await self.write(reply)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def admit(self) -> bool:
        if self.engines.responder is None:
            message = f"the {self.engines.kind} engine has no conversation model"
            await self.close_unserved(
                encode(ErrorEvent("engine_unavailable", message)), "no conversation model"
            )
            return False
        return True

    async def start(self) -> None:
        if self.session.config.turn_detection.enabled:
            from gateway.audio import vad

            await asyncio.to_thread(vad.load)  # the first session pays the model load off the loop
        await self.write({"type": "session.created", "session": self._session_body()})

    async def aclose(self) -> None:
        await self.session.close()  # cancels the reply; history and audio are dropped
