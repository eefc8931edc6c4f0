"""What the conversation core tells its protocol adapter. Adapters choose names and JSON shapes; the core
never builds a wire message, so a second protocol (OpenAI Realtime) reuses it unchanged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int  # position in the input stream since the connection opened


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int


@dataclass(frozen=True)
class TurnCommitted:
    """The input buffer became a user turn (by commit or by server VAD)."""

    item_id: str
    audio_ms: int
    auto: bool  # True when server VAD committed it


@dataclass(frozen=True)
class Transcript:
    item_id: str
    text: str
    language: str
    duration_s: float


@dataclass(frozen=True)
class ResponseStarted:
    response_id: str
    item_id: str  # the user turn it answers


@dataclass(frozen=True)
class TextDelta:
    response_id: str
    text: str


@dataclass(frozen=True)
class AudioOut:
    """One frame of reply audio: PCM s16le mono at the gateway rate."""

    response_id: str
    pcm: bytes
    sentence_index: int


@dataclass(frozen=True)
class Interrupted:
    response_id: str
    reason: str  # "client" (interrupt event), "speech" (barge-in by VAD), "commit" (a new turn)
    audio_sent_ms: int
    text_kept: str  # what stays in the history: the part of the reply that was actually sent


@dataclass(frozen=True)
class ResponseDone:
    response_id: str
    status: str  # "completed" | "interrupted" | "failed"
    text: str  # the reply as kept in the history
    audio_ms: int
    timings: dict[str, float | None] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)
    # The reply's audio per sentence (text, samples made, samples sent): how an adapter maps audio time to
    # text later (Realtime's conversation.item.truncate). Not part of the /voice wire.
    segments: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ErrorEvent:
    code: str
    message: str


VoiceEvent = (
    SpeechStarted
    | SpeechStopped
    | TurnCommitted
    | Transcript
    | ResponseStarted
    | TextDelta
    | AudioOut
    | Interrupted
    | ResponseDone
    | ErrorEvent
)
