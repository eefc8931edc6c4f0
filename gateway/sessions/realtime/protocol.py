"""Client events of the OpenAI Realtime API (GA shapes, and the beta shapes clients still send), validated.

Every malformed message becomes a `RealtimeError` that names the event type, the offending parameter and
the client's `event_id`, so the session can answer with an `error` event and go on. Parameters the API
defines but this server does not act on (temperature, noise reduction...) are accepted and ignored;
parameters the API does not define are refused, as OpenAI does, so a typo does not pass silently.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from gateway.errors import GatewayError

log = logging.getLogger(__name__)


class RealtimeError(GatewayError):
    """An `error` event for the client. `type` follows OpenAI: invalid_request_error or server_error."""

    status = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message, code=code)
        self.param = param
        self.event_id = event_id
        self.type = type

    @classmethod
    def of(cls, exc: BaseException, *, param: str | None = None) -> RealtimeError:
        """The Realtime edge of the gateway's error tree: any exception as the error event to send. A core
        or engine error keeps its message under OpenAI's code for the same condition; anything else is a
        server fault, logged here and reported without its details."""
        if isinstance(exc, RealtimeError):
            return exc
        if isinstance(exc, GatewayError):
            kind = "server_error" if exc.code == "internal_error" else "invalid_request_error"
            return cls(_OPENAI_CODES.get(exc.code, exc.code), exc.message, param=param, type=kind)
        log.error("realtime event failed", exc_info=exc)
        return cls("internal_error", "The event failed on the server.", type="server_error")


# Core error codes -> the code OpenAI uses for the same condition.
_OPENAI_CODES = {
    "empty_audio_buffer": "input_audio_buffer_commit_empty",
    "no_active_response": "response_cancel_not_active",
    "response_in_progress": "conversation_already_has_active_response",
}


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(None, max_length=512)


# -- conversation items --------------------------------------------------------------------------------

ContentType = Literal[
    "input_text",
    "input_audio",
    "input_image",
    "item_reference",
    "text",
    "output_text",
    "audio",
    "output_audio",
]


class ContentParam(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ContentType
    text: str | None = None
    audio: str | None = None  # base64 in the session's input format
    transcript: str | None = None
    id: str | None = None  # item_reference
    image_url: str | None = None
    detail: str | None = None


class ItemParam(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=64)
    type: Literal["message", "function_call", "function_call_output", "item_reference"] = "message"
    object: Literal["realtime.item"] | None = None
    status: Literal["completed", "incomplete", "in_progress"] | None = None
    role: Literal["user", "assistant", "system"] | None = None
    content: list[ContentParam] = Field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


# -- responses -----------------------------------------------------------------------------------------


class ResponseParams(BaseModel):
    """`response.create`'s `response`: GA fields, and the beta ones (`modalities`, `voice`, ...)."""

    model_config = ConfigDict(extra="forbid")

    instructions: str | None = Field(None, max_length=16_000)
    output_modalities: list[Literal["text", "audio"]] | None = None
    modalities: list[Literal["text", "audio"]] | None = None  # beta
    audio: dict[str, Any] | None = None  # GA {"output": {"voice", "format"}}
    voice: str | None = None  # beta
    output_audio_format: str | None = None  # beta
    max_output_tokens: int | Literal["inf"] | None = None
    max_response_output_tokens: int | Literal["inf"] | None = None  # beta
    conversation: str | None = None  # "auto" | "none"
    input: list[ItemParam] | None = None
    metadata: dict[str, str] | None = None
    temperature: float | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    prompt: Any = None
    reasoning: Any = None


# -- the events ----------------------------------------------------------------------------------------


class SessionUpdate(_Event):
    type: Literal["session.update"]
    session: dict[str, Any]


class TranscriptionSessionUpdate(_Event):
    type: Literal["transcription_session.update"]
    session: dict[str, Any]


class InputAudioBufferAppend(_Event):
    type: Literal["input_audio_buffer.append"]
    audio: str


class InputAudioBufferCommit(_Event):
    type: Literal["input_audio_buffer.commit"]


class InputAudioBufferClear(_Event):
    type: Literal["input_audio_buffer.clear"]


class ConversationItemCreate(_Event):
    type: Literal["conversation.item.create"]
    previous_item_id: str | None = None
    item: ItemParam


class ConversationItemRetrieve(_Event):
    type: Literal["conversation.item.retrieve"]
    item_id: str


class ConversationItemDelete(_Event):
    type: Literal["conversation.item.delete"]
    item_id: str


class ConversationItemTruncate(_Event):
    type: Literal["conversation.item.truncate"]
    item_id: str
    content_index: int = Field(ge=0)
    audio_end_ms: int = Field(ge=0)


class ResponseCreate(_Event):
    type: Literal["response.create"]
    response: ResponseParams | None = None


class ResponseCancel(_Event):
    type: Literal["response.cancel"]
    response_id: str | None = None


class OutputAudioBufferClear(_Event):
    type: Literal["output_audio_buffer.clear"]


ClientEvent = Annotated[
    SessionUpdate
    | TranscriptionSessionUpdate
    | InputAudioBufferAppend
    | InputAudioBufferCommit
    | InputAudioBufferClear
    | ConversationItemCreate
    | ConversationItemRetrieve
    | ConversationItemDelete
    | ConversationItemTruncate
    | ResponseCreate
    | ResponseCancel
    | OutputAudioBufferClear,
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
CLIENT_EVENT_TYPES = frozenset(
    t.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for t in (
        SessionUpdate,
        TranscriptionSessionUpdate,
        InputAudioBufferAppend,
        InputAudioBufferCommit,
        InputAudioBufferClear,
        ConversationItemCreate,
        ConversationItemRetrieve,
        ConversationItemDelete,
        ConversationItemTruncate,
        ResponseCreate,
        ResponseCancel,
        OutputAudioBufferClear,
    )
)


def _param(loc: tuple[Any, ...], event_type: str) -> str:
    # pydantic puts the discriminator value first in the location of a tagged-union member
    parts = [str(p) for p in loc]
    if parts and parts[0] == event_type:
        parts = parts[1:]
    return ".".join(parts)


def describe(exc: ValidationError, event_type: str) -> tuple[str, str, str]:
    """(code, message, param) for the first problem, OpenAI-style: unknown_parameter / missing / invalid."""
    errors = exc.errors()
    first = errors[0]
    param = _param(first.get("loc", ()), event_type)
    kind = first.get("type", "")
    if kind == "extra_forbidden":
        code, text = "unknown_parameter", f"Unknown parameter: '{param}'."
    elif kind == "missing":
        code, text = "missing_required_parameter", f"Missing required parameter: '{param}'."
    else:
        code, text = "invalid_value", f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    if len(errors) > 1:
        text += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in this event)"
    return code, f"{event_type}: {text}", param


def parse_client_event(raw: str | bytes) -> ClientEvent:
    """One text frame -> a typed client event, or RealtimeError naming what is wrong."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RealtimeError("invalid_json", f"The message is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RealtimeError("invalid_json", "A client event must be a JSON object.")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    event_type = data.get("type")
    if not isinstance(event_type, str):
        raise RealtimeError(
            "missing_required_parameter",
            "Missing required parameter: 'type'.",
            param="type",
            event_id=event_id,
        )
    if event_type not in CLIENT_EVENT_TYPES:
        raise RealtimeError(
            "invalid_event_type",
            f"Invalid value: '{event_type[:100]}'. Supported client events: "
            + ", ".join(sorted(CLIENT_EVENT_TYPES))
            + ".",
            param="type",
            event_id=event_id,
        )
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        code, message, param = describe(exc, event_type)
        raise RealtimeError(code, message, param=param or None, event_id=event_id) from None
