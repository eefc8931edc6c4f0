"""Realtime session configuration: `session.update` in its GA shape (nested `audio.input/output`) and its
beta shape (flat `voice`, `input_audio_format`, `turn_detection`...), merged into one validated state and
rendered back in the dialect the client speaks.

Only what the engines can honour is stored; parameters OpenAI defines that have no meaning here
(temperature, noise reduction, tracing...) are accepted and ignored, and the docs list them. Function tools
are checked in tools.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.engines.openai_names import OPENAI_VOICES
from gateway.sessions.realtime.audio import FORMATS, PCM16, AudioFormat
from gateway.sessions.realtime.protocol import RealtimeError
from gateway.sessions.realtime.tools import ToolConfig, render_choice, render_tools, update

DEFAULT_MODEL = "gpt-realtime"
DEFAULT_TRANSCRIPTION_MODEL = "whisper-1"

# semantic_vad has no semantic model here: its eagerness becomes a silence duration (the documented
# maximum waits of low/medium/high are 8 s / 4 s / 2 s; these keep the same order at conversational pace).
EAGERNESS_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 400}


class TurnDetectionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    prefix_padding_ms: int = Field(300, ge=0, le=2_000)
    silence_duration_ms: int = Field(500, ge=100, le=10_000)
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = Field(None, ge=5_000, le=30_000)
    eagerness: Literal["low", "medium", "high", "auto"] | None = None

    @property
    def effective_silence_ms(self) -> int:
        if self.type == "semantic_vad":
            return EAGERNESS_SILENCE_MS[self.eagerness or "auto"]
        return self.silence_duration_ms

    def wire(self) -> dict[str, Any]:
        if self.type == "semantic_vad":
            return {
                "type": "semantic_vad",
                "eagerness": self.eagerness or "auto",
                "create_response": self.create_response,
                "interrupt_response": self.interrupt_response,
            }
        return self.model_dump(exclude={"eagerness"})


class TranscriptionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_TRANSCRIPTION_MODEL
    language: str | None = None
    prompt: str | None = None


SERVER_VAD = TurnDetectionConfig()
NO_TOOLS = ToolConfig()


@dataclass(frozen=True)
class RealtimeConfig:
    type: Literal["realtime", "transcription"] = "realtime"
    model: str = DEFAULT_MODEL
    instructions: str = ""  # empty: the conversation core's default instructions
    voice: str = "alloy"
    output_modalities: tuple[str, ...] = ("audio",)
    input_format: AudioFormat = PCM16
    output_format: AudioFormat = PCM16
    speed: float = 1.0
    transcription: TranscriptionConfig | None = None
    turn_detection: TurnDetectionConfig | None = SERVER_VAD
    max_output_tokens: int | Literal["inf"] = "inf"
    tools: ToolConfig = NO_TOOLS

    @property
    def engine_voice(self) -> str:
        return "default" if self.voice.lower() in OPENAI_VOICES else self.voice


def initial_config(intent: str | None, model: str | None) -> RealtimeConfig:
    """The session a fresh connection gets: `?intent=transcription` opens a transcription session."""
    if intent == "transcription":
        return RealtimeConfig(
            type="transcription",
            model=model or DEFAULT_TRANSCRIPTION_MODEL,
            output_modalities=("text",),
            transcription=TranscriptionConfig(model=model or DEFAULT_TRANSCRIPTION_MODEL),
        )
    return RealtimeConfig(model=model or DEFAULT_MODEL)


# -- session.update ------------------------------------------------------------------------------------

# Defined by the API, accepted, without effect here.
_IGNORED = frozenset(
    (
        "id",
        "object",
        "expires_at",
        "client_secret",
        "include",
        "parallel_tool_calls",
        "temperature",
        "tracing",
        "truncation",
        "prompt",
        "reasoning",
        "noise_reduction",
        "input_audio_noise_reduction",
    )
)
_SESSION_KEYS = frozenset(
    (
        "type",
        "model",
        "instructions",
        "output_modalities",
        "modalities",
        "audio",
        "voice",
        "speed",
        "input_audio_format",
        "output_audio_format",
        "input_audio_transcription",
        "turn_detection",
        "max_output_tokens",
        "max_response_output_tokens",
        "tools",
        "tool_choice",
    )
)


def _err(param: str, message: str, code: str = "invalid_value") -> RealtimeError:
    return RealtimeError(code, message, param=param)


def _check_keys(obj: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _err(where, f"'{where}' must be an object.", "invalid_type")
    for key in obj:
        if key not in allowed and key not in _IGNORED:
            raise _err(f"{where}.{key}", f"Unknown parameter: '{where}.{key}'.", "unknown_parameter")
    return obj


def _format(value: Any, param: str) -> AudioFormat:
    if isinstance(value, str):
        name = value
    elif isinstance(value, dict):
        _check_keys(value, frozenset(("type", "rate")), param)
        name = value.get("type", "audio/pcm")
        rate = value.get("rate")
        fmt = FORMATS.get(name) if isinstance(name, str) else None
        if fmt is not None and rate is not None and rate != fmt.rate:
            raise _err(f"{param}.rate", f"'{name}' is supported at {fmt.rate} Hz only; got {rate!r}.")
    else:
        raise _err(param, "An audio format is a string ('pcm16') or an object ({'type': 'audio/pcm'}).")
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise _err(param, f"Unsupported audio format {name!r}; supported: {', '.join(sorted(FORMATS))}.")
    return fmt


def _turn_detection(
    value: Any, current: TurnDetectionConfig | None, param: str
) -> TurnDetectionConfig | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _err(param, "turn_detection must be an object or null.", "invalid_type")
    fields = dict(value)
    if fields.get("type") in ("none", None) and "type" in fields:
        return None
    base = current.model_dump() if current is not None else {}
    if "type" in fields and current is not None and fields["type"] != current.type:
        base = {}  # a different kind of detector starts from its own defaults
    try:
        return TurnDetectionConfig.model_validate({**base, **fields})
    except ValidationError as exc:
        raise _validation(exc, param) from None


def _transcription(value: Any, param: str) -> TranscriptionConfig | None:
    if value is None:
        return None
    try:
        return TranscriptionConfig.model_validate(value)
    except ValidationError as exc:
        raise _validation(exc, param) from None


def _validation(exc: ValidationError, param: str) -> RealtimeError:
    first = exc.errors()[0]
    where = ".".join([param, *(str(p) for p in first.get("loc", ()))])
    if first.get("type") == "extra_forbidden":
        return _err(where, f"Unknown parameter: '{where}'.", "unknown_parameter")
    return _err(where, f"Invalid value for '{where}': {first.get('msg', 'invalid')}.")


def _modalities(value: Any, param: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise _err(param, "Modalities must be a non-empty list of 'text' and/or 'audio'.")
    # Audio output always carries its transcript, so ["text", "audio"] means audio (as OpenAI does).
    return ("audio",) if "audio" in value else ("text",)


def _max_tokens(value: Any, param: str) -> int | Literal["inf"]:
    if value == "inf" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 4096):
        return value
    raise _err(param, "max_output_tokens must be an integer between 1 and 4096, or 'inf'.")


def apply_session_update(
    config: RealtimeConfig, session: Any, *, transcription_event: bool = False
) -> RealtimeConfig:
    """`config` with a `session.update` (or beta `transcription_session.update`) applied; RealtimeError on
    the first invalid parameter, leaving the session unchanged."""
    s = _check_keys(session, _SESSION_KEYS, "session")
    new_type = "transcription" if transcription_event else s.get("type", config.type)
    if new_type not in ("realtime", "transcription"):
        raise _err("session.type", "session.type must be 'realtime' or 'transcription'.")
    if new_type != config.type:
        raise _err(
            "session.type",
            f"This is a {config.type} session; its type cannot change to {new_type!r}. Open a transcription "
            "session with ?intent=transcription.",
        )
    changes: dict[str, Any] = {}
    td = config.turn_detection
    if "model" in s:
        if not isinstance(s["model"], str):
            raise _err("session.model", "session.model must be a string.")
        changes["model"] = s["model"]
    if "instructions" in s:
        if not isinstance(s["instructions"], str) or len(s["instructions"]) > 16_000:
            raise _err("session.instructions", "instructions must be a string of at most 16000 characters.")
        changes["instructions"] = s["instructions"]
    for key in ("output_modalities", "modalities"):
        if key in s:
            changes["output_modalities"] = _modalities(s[key], f"session.{key}")
    for key in ("max_output_tokens", "max_response_output_tokens"):
        if key in s:
            changes["max_output_tokens"] = _max_tokens(s[key], f"session.{key}")
    if "tools" in s or "tool_choice" in s:
        changes["tools"] = update(
            config.tools,
            s.get("tools"),
            s.get("tool_choice"),
            "session",
            has_tools="tools" in s,
            has_choice="tool_choice" in s,
        )
    # beta, flat
    if "voice" in s:
        changes["voice"] = _voice(s["voice"], "session.voice")
    if "speed" in s:
        changes["speed"] = _speed(s["speed"], "session.speed")
    if "input_audio_format" in s:
        changes["input_format"] = _format(s["input_audio_format"], "session.input_audio_format")
    if "output_audio_format" in s:
        changes["output_format"] = _format(s["output_audio_format"], "session.output_audio_format")
    if "input_audio_transcription" in s:
        changes["transcription"] = _transcription(
            s["input_audio_transcription"], "session.input_audio_transcription"
        )
    if "turn_detection" in s:
        td = changes["turn_detection"] = _turn_detection(s["turn_detection"], td, "session.turn_detection")
    # GA, nested
    if "audio" in s:
        audio = _check_keys(s["audio"], frozenset(("input", "output")), "session.audio")
        if "input" in audio:
            inp = _check_keys(
                audio["input"],
                frozenset(("format", "transcription", "turn_detection")),
                "session.audio.input",
            )
            if "format" in inp:
                changes["input_format"] = _format(inp["format"], "session.audio.input.format")
            if "transcription" in inp:
                changes["transcription"] = _transcription(
                    inp["transcription"], "session.audio.input.transcription"
                )
            if "turn_detection" in inp:
                changes["turn_detection"] = _turn_detection(
                    inp["turn_detection"], td, "session.audio.input.turn_detection"
                )
        if "output" in audio:
            if new_type == "transcription":
                raise _err(
                    "session.audio.output",
                    "A transcription session has no audio output.",
                    "unknown_parameter",
                )
            out = _check_keys(
                audio["output"], frozenset(("format", "voice", "speed")), "session.audio.output"
            )
            if "format" in out:
                changes["output_format"] = _format(out["format"], "session.audio.output.format")
            if "voice" in out:
                changes["voice"] = _voice(out["voice"], "session.audio.output.voice")
            if "speed" in out:
                changes["speed"] = _speed(out["speed"], "session.audio.output.speed")
    new = replace(config, **changes)
    if new.type == "transcription" and new.transcription is None:
        raise _err(
            "session.audio.input.transcription", "A transcription session needs a transcription model."
        )
    return new


def _voice(value: Any, param: str) -> str:
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        value = value["id"]
    if not isinstance(value, str) or not value.strip():
        raise _err(param, "voice must be a non-empty string.")
    return value


def _speed(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.25 <= value <= 1.5:
        raise _err(param, "speed must be a number between 0.25 and 1.5.")
    return float(value)


# -- rendering -----------------------------------------------------------------------------------------


def render_session(config: RealtimeConfig, session_id: str, *, beta: bool) -> dict[str, Any]:
    """The session object of `session.created` / `session.updated`, in the client's dialect."""
    td = config.turn_detection.wire() if config.turn_detection is not None else None
    tr = config.transcription.model_dump() if config.transcription is not None else None
    if beta:
        out: dict[str, Any] = {
            "id": session_id,
            "object": "realtime.transcription_session"
            if config.type == "transcription"
            else "realtime.session",
            "input_audio_format": config.input_format.name,
            "input_audio_transcription": tr,
            "turn_detection": td,
        }
        if config.type == "transcription":
            # Required by the beta TranscriptionSession type. A WebSocket session issues no ephemeral key
            # (OpenAI documents the field as absent there), so it says so with an empty, expired secret.
            out["client_secret"] = {"value": "", "expires_at": 0}
        if config.type == "realtime":
            out |= {
                "model": config.model,
                "modalities": ["text", "audio"] if "audio" in config.output_modalities else ["text"],
                "instructions": config.instructions,
                "voice": config.voice,
                "output_audio_format": config.output_format.name,
                "speed": config.speed,
                "max_response_output_tokens": config.max_output_tokens,
                "tools": render_tools(config.tools.tools),
                "tool_choice": render_choice(config.tools.choice, beta=True),
            }
        return out
    inp = {
        "format": config.input_format.ga(),
        "transcription": tr,
        "turn_detection": td,
        "noise_reduction": None,
    }
    if config.type == "transcription":
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "audio": {"input": inp},
            "include": [],
        }
    return {
        "type": "realtime",
        "id": session_id,
        "object": "realtime.session",
        "model": config.model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "audio": {
            "input": inp,
            "output": {"format": config.output_format.ga(), "voice": config.voice, "speed": config.speed},
        },
        "max_output_tokens": config.max_output_tokens,
        "tools": render_tools(config.tools.tools),
        "tool_choice": render_choice(config.tools.choice, beta=False),
        "tracing": None,
        "truncation": "auto",
    }
