"""Server events of the Realtime API in the client's dialect.

GA names by default. A client that asks for the beta protocol, as the beta SDKs do with the header
`OpenAI-Beta: realtime=v1` (browsers: the subprotocol `openai-beta.realtime-v1`), gets the beta names
instead: `response.audio.delta`, `response.audio_transcript.*`, `response.text.*`,
`conversation.item.created`, `transcription_session.updated`. Never both at once: a client that handles both
spellings would play every audio chunk twice, and every other client would pay double bandwidth for
audio it ignores.
"""

from __future__ import annotations

from typing import Any

from gateway.sessions.realtime.items import new_id
from gateway.sessions.realtime.protocol import RealtimeError

_BETA_NAMES = {
    "response.output_audio.delta": "response.audio.delta",
    "response.output_audio.done": "response.audio.done",
    "response.output_audio_transcript.delta": "response.audio_transcript.delta",
    "response.output_audio_transcript.done": "response.audio_transcript.done",
    "response.output_text.delta": "response.text.delta",
    "response.output_text.done": "response.text.done",
    "conversation.item.added": "conversation.item.created",
}
# GA events the beta protocol does not have.
_GA_ONLY = frozenset(("conversation.item.done", "input_audio_buffer.timeout_triggered"))


def wants_beta(headers: dict[str, str], subprotocols: list[str]) -> bool:
    beta = headers.get("openai-beta", "")
    return "realtime=v1" in beta.replace(" ", "") or "openai-beta.realtime-v1" in subprotocols


class Wire:
    def __init__(self, beta: bool, transcription: bool = False) -> None:
        self.beta = beta
        self.transcription = transcription

    def name(self, ga_name: str) -> str | None:
        """The event name in this dialect, or None when the dialect has no such event."""
        if not self.beta:
            return ga_name
        if ga_name in _GA_ONLY:
            return None
        if self.transcription and ga_name == "session.updated":
            # Only the update is renamed: the beta server-event union has `transcription_session.updated`
            # but no `transcription_session.created`, so a beta transcription session opens with
            # `session.created` (openai-python 3.63 types/beta/realtime/realtime_server_event.py).
            return "transcription_session.updated"
        return _BETA_NAMES.get(ga_name, ga_name)

    def event(self, ga_name: str, **fields: Any) -> dict[str, Any] | None:
        name = self.name(ga_name)
        if name is None:
            return None
        return {"type": name, "event_id": new_id("event"), **fields}

    @staticmethod
    def error(err: RealtimeError) -> dict[str, Any]:
        # The nested object is OpenAI's shape; `code` and `message` are repeated at the top level, the
        # gateway's one WebSocket error convention, so a client of /voice reads these errors too.
        return {
            "type": "error",
            "event_id": new_id("event"),
            "error": {
                "type": err.type,
                "code": err.code,
                "message": err.message,
                "param": err.param,
                "event_id": err.event_id,
            },
            "code": err.code,
            "message": err.message,
        }
