"""Per-connection conversation settings and their validated updates (protocol-independent)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.sessions.voice.errors import VoiceError

DEFAULT_INSTRUCTIONS = (
    "You are a friendly voice assistant. Your answers are spoken aloud, so reply in one or two short, "
    "plain sentences without lists or markup."
)


class TurnDetection(BaseModel):
    """Server VAD: silence after speech ends the user's turn and starts the reply by itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    threshold: float = Field(0.5, gt=0, lt=1)  # Silero speech probability that counts as speech
    silence_duration_ms: int = Field(500, ge=100, le=10_000)
    prefix_padding_ms: int = Field(300, ge=0, le=2_000)  # audio kept from before the speech start
    min_speech_ms: int = Field(96, ge=0, le=2_000)  # shorter blips (clicks, coughs) are not speech
    interrupt_response: bool = True  # user speech during the reply interrupts it (barge-in)
    create_response: bool = True  # False: a VAD commit only transcribes (OpenAI Realtime's flag)


class SessionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    voice: str = "default"
    language: str = "en"
    instructions: str = Field(DEFAULT_INSTRUCTIONS, max_length=8_000)
    max_response_tokens: int = Field(160, ge=1, le=4096)
    turn_detection: TurnDetection = TurnDetection()


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "session"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def apply_update(config: SessionConfig, changes: Any, max_tokens_limit: int) -> SessionConfig:
    """A new config with `changes` (a partial mapping) applied; raises VoiceError on anything invalid.

    `turn_detection: null` (or `{"type": "none"}` or `{"enabled": false}`) turns server VAD off; a
    partial turn_detection mapping changes only the fields it names.
    """
    if not isinstance(changes, dict):
        raise VoiceError("invalid_session_config", "session must be an object")
    merged = config.model_dump()
    for key, value in changes.items():
        if key == "turn_detection":
            if value is None:
                merged[key] = {**merged[key], "enabled": False}
            elif isinstance(value, dict):
                fields = dict(value)
                kind = fields.pop("type", "server_vad")  # the OpenAI Realtime spelling is accepted too
                if kind not in ("server_vad", "none"):
                    raise VoiceError(
                        "invalid_session_config", "turn_detection.type must be 'server_vad' or 'none'"
                    )
                merged[key] = {**merged[key], "enabled": kind == "server_vad", **fields}
            else:
                raise VoiceError("invalid_session_config", "turn_detection must be an object or null")
        else:
            merged[key] = value
    try:
        new = SessionConfig.model_validate(merged)
    except ValidationError as exc:
        raise VoiceError("invalid_session_config", _describe(exc)) from None
    if new.max_response_tokens > max_tokens_limit:
        raise VoiceError(
            "invalid_session_config",
            f"max_response_tokens: at most {max_tokens_limit} (VOICE_MAX_RESPONSE_TOKENS)",
        )
    return new
