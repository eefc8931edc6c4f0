"""One `/v1/realtime` connection: the OpenAI Realtime protocol over the `/voice` conversation core.

The core (`VoiceSession`) owns input audio, server VAD, turns, transcription, the reply pipeline and
barge-in. This adapter owns what only the Realtime protocol has: ids and items the client can address,
`response.create` on demand, truncation of what was not heard, the transcription-only session, and the
event names. History flows one way: the item store is the conversation, and the core reads it through
`ItemHistory` when it builds a prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import ChatMessage, ResponseEvent
from gateway.engines.registry import Engines
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.sessions.connection import Transport, WebSocketConnection
from gateway.sessions.realtime import protocol as p
from gateway.sessions.realtime.audio import (
    AudioPayloadError,
    InputDecoder,
    OutputEncoder,
    decode_base64,
    encode_base64,
)
from gateway.sessions.realtime.captions import LiveCaptions
from gateway.sessions.realtime.config import (
    RealtimeConfig,
    apply_session_update,
    initial_config,
    render_session,
)
from gateway.sessions.realtime.idle import IdleWindow
from gateway.sessions.realtime.items import (
    ContentPart,
    Item,
    ItemStore,
    SpokenSpan,
    WordSpan,
    cut_at,
    fit_history,
    item_from_param,
    new_id,
)
from gateway.sessions.realtime.protocol import RealtimeError
from gateway.sessions.realtime.tools import ToolConfig, ToolingResponder, update
from gateway.sessions.realtime.wire import Wire
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
from gateway.sessions.voice.history import CHARS_PER_TOKEN, keep_earlier, with_earlier
from gateway.sessions.voice.session import VoiceSession
from gateway.settings import Settings

log = logging.getLogger(__name__)

MIN_COMMIT_MS = 100  # as OpenAI: a shorter buffer is refused rather than sent to the ASR


class ItemHistory:
    """The core's view of the conversation: the item store, in order, within the history budget.

    `add` does nothing: the adapter records every item from the core's events (with its id), so the
    conversation has one source the client can edit with create / delete / truncate."""

    def __init__(self, items: ItemStore, max_tokens: int) -> None:
        self.items = items
        self.budget_chars = max_tokens * CHARS_PER_TOKEN if max_tokens > 0 else None

    def messages(self, instructions: str) -> list[ChatMessage]:
        """The newest items within the budget; the user's words in items left out go into a note on the
        system message, as /voice's memory does (a name from turn 1 outlives the window)."""
        every = self.items.messages()
        kept = fit_history(every, self.budget_chars)
        # fit_history keeps a suffix of `every` (the newest message perhaps cut short): the rest was left out.
        left_out = [m.content for m in every[: len(every) - len(kept)] if m.role == "user"]
        if self.budget_chars is not None:
            keep_earlier(left_out, self.budget_chars // CHARS_PER_TOKEN // 4)
        return [ChatMessage("system", with_earlier(instructions, left_out)), *kept]

    def add(self, role: str, text: str) -> None:
        pass

    def clear(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True)
class _Request:
    """What a `response.create` asked for, until the core starts the reply."""

    modalities: tuple[str, ...]
    out_of_band: bool = False  # conversation "none": the reply is not added to the conversation
    metadata: dict[str, str] | None = None
    max_tokens: int | None = None
    tools: ToolConfig | None = None  # None: the session's


@dataclass
class _Response:
    id: str
    core_id: str
    modalities: tuple[str, ...]
    out_of_band: bool = False
    metadata: dict[str, str] | None = None
    max_tokens: int = 0  # the limit in effect: reaching it makes the response "incomplete"
    tools: ToolConfig = field(default_factory=ToolConfig)
    # The assistant message, once the reply has one: at once without tools; with tools only when text or
    # audio comes, so a reply that only calls a function has no empty message.
    item: Item | None = None
    outputs: list[Item] = field(default_factory=list)  # in output_index order
    calls: dict[str, Item] = field(default_factory=dict)  # call_id -> its function_call item
    cancel_reason: str | None = None
    transcript: str = ""  # streamed so far (text deltas)
    wire_bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    first_audio: float | None = None  # monotonic time of the first audio delta

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


class RealtimeConnection(WebSocketConnection):
    gauge_kind = "realtime"

    def __init__(
        self,
        ws: Transport,
        engines: Engines,
        settings: Settings,
        metrics: Metrics | None,
        *,
        beta: bool = False,
        intent: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(ws, metrics)
        self.engines = engines
        self.settings = settings
        self.session_id = new_id("sess")
        self.config: RealtimeConfig = initial_config(intent, model)
        self.wire = Wire(beta, transcription=self.config.type == "transcription")
        self.items = ItemStore(max_bytes=settings.realtime_max_conversation_bytes)
        self.rate = settings.audio_sample_rate
        self._history = ItemHistory(self.items, settings.voice_history_tokens)
        core_engines = engines
        if engines.responder is not None:
            # The core runs the engine through the session's tools: each request gets the response's
            # tools, and the model's calls come here as function_call items.
            tooling = ToolingResponder(engines.responder, self._reply_tools, self._tool_call)
            core_engines = replace(engines, responder=tooling)
        self.core = VoiceSession(
            core_engines, settings, self._on_core_event, metrics, history=self._history, protocol="realtime"
        )
        self.core.word_timings = True  # truncation maps audio time to words with the synthesizer's timing
        self._decoder = InputDecoder(self.config.input_format, self.rate)
        self._encoder = OutputEncoder(self.config.output_format, self.rate)
        self._pending_item_id: str | None = None  # the id speech_started announced for the next commit
        self._user_items: dict[str, str] = {}  # core item id -> realtime item id
        self._response: _Response | None = None
        self._idle = IdleWindow()
        self._requests: dict[str, _Request] = {}  # core response id -> what response.create asked
        self._captions = (
            LiveCaptions(engines.transcriber, self.rate) if self.config.type == "transcription" else None
        )
        # Each handler takes its own event class; parse_client_event picks the class by `type`.
        self._handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "session.update": self._on_session_update,
            "transcription_session.update": self._on_session_update,
            "input_audio_buffer.append": self._on_append,
            "input_audio_buffer.commit": self._on_commit,
            "input_audio_buffer.clear": self._on_clear,
            "conversation.item.create": self._on_item_create,
            "conversation.item.retrieve": self._on_item_retrieve,
            "conversation.item.delete": self._on_item_delete,
            "conversation.item.truncate": self._on_item_truncate,
            "response.create": self._on_response_create,
            "response.cancel": self._on_response_cancel,
            "output_audio_buffer.clear": self._on_output_clear,
        }

    # -- output ----------------------------------------------------------------------------------------
    async def send(self, ga_name: str, **fields: Any) -> None:
        await self.write(self.wire.event(ga_name, **fields))

    async def error(self, err: RealtimeError) -> None:
        await self.write(Wire.error(err))

    def _session(self) -> dict[str, Any]:
        return render_session(self.config, self.session_id, beta=self.wire.beta)

    # -- configuration -----------------------------------------------------------------------------------
    def _core_changes(self, cfg: RealtimeConfig) -> dict[str, Any]:
        td = cfg.turn_detection
        transcribing = cfg.type == "transcription"
        changes: dict[str, Any] = {
            "voice": cfg.engine_voice,
            "max_response_tokens": (
                self.settings.voice_max_response_tokens
                if cfg.max_output_tokens == "inf"
                else min(int(cfg.max_output_tokens), self.settings.voice_max_response_tokens)
            ),
        }
        if cfg.instructions:
            changes["instructions"] = cfg.instructions
        # A transcription session's language is the transcriber's alone (_apply): the voice and the
        # conversation model need not speak it.
        if cfg.transcription is not None and cfg.transcription.language and not transcribing:
            changes["language"] = cfg.transcription.language
        if td is None:
            changes["turn_detection"] = None
        else:
            changes["turn_detection"] = {
                "type": "server_vad",
                "threshold": td.threshold,
                "prefix_padding_ms": td.prefix_padding_ms,
                "silence_duration_ms": td.effective_silence_ms,
                "interrupt_response": td.interrupt_response and not transcribing,
                "create_response": td.create_response and not transcribing,
            }
        return changes

    def _apply(self, cfg: RealtimeConfig) -> None:
        try:
            self.core.update(self._core_changes(cfg))
            if cfg.type == "transcription" and cfg.transcription is not None and cfg.transcription.language:
                code = self.engines.transcriber.check_language(cfg.transcription.language)
                self.core.config = self.core.config.model_copy(update={"language": code or ""})
        except GatewayError as exc:  # a bad voice or language: the client names it in the session
            raise RealtimeError.of(exc, param="session") from None
        if cfg.input_format != self.config.input_format:
            self._decoder = InputDecoder(cfg.input_format, self.rate)
        if cfg.output_format != self.config.output_format:
            self._encoder = OutputEncoder(cfg.output_format, self.rate)
        if self._captions is not None and cfg.transcription is not None:
            self._captions.language = cfg.transcription.language
        self.core.speak = "audio" in cfg.output_modalities  # for replies server VAD starts
        self.config = cfg

    # -- client events -----------------------------------------------------------------------------------
    async def receive_bytes(self, data: bytes) -> None:
        # Some clients send JSON as binary frames; the API defines text frames only.
        await self.receive_text(data)

    async def receive_text(self, raw: str | bytes) -> None:
        event_id: str | None = None
        try:
            event = p.parse_client_event(raw)
            event_id = event.event_id
            await self._handlers[event.type](event)
        except Exception as exc:
            err = RealtimeError.of(exc)
            err.event_id = err.event_id or event_id
            await self.error(err)

    async def _on_session_update(self, event: p.SessionUpdate | p.TranscriptionSessionUpdate) -> None:
        beta_transcription = event.type == "transcription_session.update"
        new = apply_session_update(self.config, event.session, transcription_event=beta_transcription)
        self._apply(new)
        await self.send("session.updated", session=self._session())

    async def _on_append(self, event: p.InputAudioBufferAppend) -> None:
        try:
            pcm = self._decoder.decode(decode_base64(event.audio))
        except AudioPayloadError as exc:
            raise RealtimeError("invalid_value", str(exc), param="audio") from None
        if self._captions is not None:
            self._captions.append(pcm)
        self._idle.wrote(len(pcm) * 500 / self.rate)  # s16le mono: 2 bytes a sample
        try:
            await self.core.append_audio(pcm)
            await self._check_idle()
        finally:
            if self._captions is not None and self._captions.due(self.core.turns.in_speech):
                self._captions.start(self._caption_delta)

    async def _on_commit(self, event: p.InputAudioBufferCommit) -> None:
        ms = self.core.buffer.duration_ms
        if ms < MIN_COMMIT_MS:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                f"Error committing input audio buffer: buffer too small. Expected at least {MIN_COMMIT_MS}ms "
                f"of audio, but buffer only has {ms}ms of audio.",
            )
        # A manual commit only adds the user item; the client asks for the answer with response.create.
        await self.core.commit(respond=False)

    async def _on_clear(self, event: p.InputAudioBufferClear) -> None:
        self.core.clear_audio()
        self._pending_item_id = None
        if self._captions is not None:
            self._captions.reset()
        await self.send("input_audio_buffer.cleared")

    async def _on_item_create(self, event: p.ConversationItemCreate) -> None:
        # Everything that can be refused is checked before any audio is decoded or transcribed.
        self.items.check_room(item_from_param(event.item))
        if event.item.id is not None and event.item.id in self.items:
            raise RealtimeError(
                "duplicate_item_id", f"Item with id {event.item.id!r} already exists.", param="item.id"
            )
        if event.previous_item_id not in (None, "root"):
            self.items.get(event.previous_item_id, "previous_item_id")
        item = await self._materialize(event.item)
        previous = self.items.add(item, event.previous_item_id)
        await self._announce_item(item, previous)

    async def _materialize(self, param: p.ItemParam) -> Item:
        """A client's message item with its audio measured and, where no transcript came, transcribed."""
        item = item_from_param(param)
        limit_ms = self.settings.voice_max_input_seconds * 1000
        for i, content in enumerate(param.content):
            if content.type != "input_audio" or not content.audio:
                continue
            try:
                pcm = InputDecoder(self.config.input_format, self.rate).decode(decode_base64(content.audio))
            except AudioPayloadError as exc:
                raise RealtimeError("invalid_value", str(exc), param=f"item.content.{i}.audio") from None
            ms = len(pcm) / 2 * 1000 / self.rate
            if ms > limit_ms:
                raise RealtimeError(
                    "input_audio_too_long",
                    f"An audio item holds at most {limit_ms / 1000:g} s (VOICE_MAX_INPUT_SECONDS); this one "
                    f"has {ms / 1000:.1f} s.",
                    param=f"item.content.{i}.audio",
                )
            item.content[i].audio_ms = ms
            if content.transcript is None and pcm:
                item.content[i].transcript = await self._transcribe(pcm)
        return item

    async def _transcribe(self, pcm: bytes) -> str:
        asr = self.engines.transcriber
        samples = await asyncio.to_thread(resample, pcm16_to_float(pcm), self.rate, asr.sample_rate)
        language = self.config.transcription.language if self.config.transcription else None
        return (await asr.transcribe(samples, language or self.core.config.language)).text.strip()

    async def _announce_item(self, item: Item, previous: str | None) -> None:
        await self.send("conversation.item.added", previous_item_id=previous, item=item.wire(self.wire.beta))
        await self.send("conversation.item.done", previous_item_id=previous, item=item.wire(self.wire.beta))

    async def _on_item_retrieve(self, event: p.ConversationItemRetrieve) -> None:
        item = self.items.get(event.item_id)
        await self.send("conversation.item.retrieved", item=item.wire(self.wire.beta))

    def _check_not_active(self, item_id: str, action: str) -> None:
        if self._response is not None and any(i.id == item_id for i in self._response.outputs):
            raise RealtimeError(
                "item_in_progress",
                f"Item {item_id!r} belongs to the response in progress; send response.cancel before you "
                f"{action} it.",
                param="item_id",
            )

    async def _on_item_delete(self, event: p.ConversationItemDelete) -> None:
        self._check_not_active(event.item_id, "delete")
        self.items.delete(event.item_id)
        await self.send("conversation.item.deleted", item_id=event.item_id)

    async def _on_item_truncate(self, event: p.ConversationItemTruncate) -> None:
        self._check_not_active(event.item_id, "truncate")
        self.items.get(event.item_id).truncate(event.content_index, event.audio_end_ms)
        await self.send(
            "conversation.item.truncated",
            item_id=event.item_id,
            content_index=event.content_index,
            audio_end_ms=event.audio_end_ms,
        )

    async def _on_response_create(self, event: p.ResponseCreate) -> None:
        if self.config.type == "transcription":
            raise RealtimeError(
                "invalid_request", "A transcription session makes no responses.", param="type"
            )
        params = event.response or p.ResponseParams()
        if params.conversation not in (None, "auto", "none"):
            raise RealtimeError(
                "unsupported_parameter",
                "response.conversation is 'auto' (the session's conversation) or 'none' (out of band); "
                "named conversations are not supported.",
                param="response.conversation",
            )
        if self.core.responding:
            raise RealtimeError(
                "conversation_already_has_active_response",
                "A response is already in progress; cancel it before creating another.",
            )
        messages = None
        if params.input is not None:
            # The prompt is exactly these items (OpenAI's custom context); references name existing items.
            context = [await self._input_item(item, i) for i, item in enumerate(params.input)]
            instructions = params.instructions or self.config.instructions or self.core.config.instructions
            given = [m for m in (item.message() for item in context) if m is not None]
            messages = [ChatMessage("system", instructions), *fit_history(given, self._history.budget_chars)]
        asked = params.output_modalities or params.modalities
        modalities = (
            (("audio",) if "audio" in asked else ("text",)) if asked else self.config.output_modalities
        )
        tools = None
        fields = params.model_fields_set
        if "tools" in fields or "tool_choice" in fields:
            # Per response, over the session's: tools given here replace the session's for this reply.
            tools = update(
                self.config.tools,
                params.tools,
                params.tool_choice,
                "response",
                has_tools="tools" in fields,
                has_choice="tool_choice" in fields,
            )
        limit = params.max_output_tokens or params.max_response_output_tokens
        max_tokens = None
        if isinstance(limit, int):
            max_tokens = min(limit, self.settings.voice_max_response_tokens)
        # The core starts the reply in a task, so the id is known before its first event.
        core_id = await self.core.respond(
            instructions=params.instructions,
            speak="audio" in modalities,
            max_tokens=max_tokens,
            messages=messages,
        )
        self._requests[core_id] = _Request(
            modalities, params.conversation == "none", params.metadata, max_tokens, tools
        )

    async def _input_item(self, param: p.ItemParam, index: int) -> Item:
        if param.type == "item_reference":
            if not param.id:
                where = f"response.input.{index}.id"
                raise RealtimeError(
                    "missing_required_parameter", f"Missing required parameter: '{where}'.", param=where
                )
            return self.items.get(param.id, f"response.input.{index}.id")
        try:
            return await self._materialize(param)
        except RealtimeError as err:
            if err.param and err.param.startswith("item"):
                err.param = f"response.input.{index}" + err.param.removeprefix("item")
            raise

    async def _on_response_cancel(self, event: p.ResponseCancel) -> None:
        current = self._response
        if event.response_id is not None and (current is None or current.id != event.response_id):
            raise RealtimeError(
                "response_cancel_not_active",
                f"Cancellation failed: response {event.response_id!r} is not in progress.",
                param="response_id",
            )
        if current is not None:
            current.cancel_reason = "client_cancelled"
        if not await self.core.interrupt("client"):
            raise RealtimeError(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )

    async def _on_output_clear(self, event: p.OutputAudioBufferClear) -> None:
        raise RealtimeError(
            "unsupported_event",
            "output_audio_buffer.clear applies to WebRTC and SIP only; over WebSocket stop playback, then "
            "send response.cancel and conversation.item.truncate.",
            param="type",
        )

    # -- core events -------------------------------------------------------------------------------------
    async def _on_core_event(self, event: VoiceEvent) -> None:
        match event:
            case AudioOut():
                await self._audio_out(event)
            case TextDelta():
                await self._text_delta(event)
            case SpeechStarted(audio_start_ms=start):
                self._idle.close()
                self._pending_item_id = self._pending_item_id or new_id("item")
                if self._captions is not None:
                    self._captions.speech_started(start)
                await self.send(
                    "input_audio_buffer.speech_started", audio_start_ms=start, item_id=self._pending_item_id
                )
            case SpeechStopped(audio_end_ms=end):
                self._pending_item_id = self._pending_item_id or new_id("item")
                await self.send(
                    "input_audio_buffer.speech_stopped", audio_end_ms=end, item_id=self._pending_item_id
                )
            case TurnCommitted():
                await self._committed(event)
            case Transcript():
                await self._transcript(event)
            case ResponseStarted():
                await self._response_started(event)
            case Interrupted(response_id=rid, reason=reason):
                current = self._response
                if current is not None and current.core_id == rid and current.cancel_reason is None:
                    current.cancel_reason = "client_cancelled" if reason == "client" else "turn_detected"
            case ResponseDone():
                await self._response_done(event)
            case ErrorEvent(code=code, message=message):
                await self.error(RealtimeError.of(GatewayError(message, code=code)))

    async def _check_idle(self) -> None:
        """Server VAD's idle timeout: the silent stretch becomes an empty user audio item and a reply is
        made to it, as OpenAI does (openai-python 3.63 types/realtime/input_audio_buffer_timeout_triggered.py:
        the event, then `input_audio_buffer.committed` and the response's events)."""
        td = self.config.turn_detection
        if (
            td is None
            or td.type != "server_vad"
            or td.idle_timeout_ms is None
            or self.config.type != "realtime"
        ):
            return
        if self.core.responding or self._response is not None or self.core.turns.in_speech:
            return
        window = self._idle.due(td.idle_timeout_ms)
        if window is None:
            return
        self._idle.close()
        start, end = window
        item_id = self._pending_item_id or new_id("item")
        self._pending_item_id = None
        self.core.clear_audio()  # the buffer is committed: what it held (padding only) is in the item
        # The beta protocol has no such event (Wire drops it); the commit and the reply follow either way.
        await self.send(
            "input_audio_buffer.timeout_triggered", audio_start_ms=start, audio_end_ms=end, item_id=item_id
        )
        item = Item(
            item_id, "user", [ContentPart("input_audio", transcript=None, audio_ms=float(end - start))]
        )
        previous = self.items.add(item, make_room=True)
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await self._announce_item(item, previous)
        await self._on_response_create(p.ResponseCreate(type="response.create"))

    async def _committed(self, event: TurnCommitted) -> None:
        self._idle.close()
        item_id = self._pending_item_id or new_id("item")
        self._pending_item_id = None
        self._user_items[event.item_id] = item_id
        item = Item(item_id, "user", [ContentPart("input_audio", transcript=None, audio_ms=event.audio_ms)])
        previous = self.items.add(item, make_room=True)
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await self._announce_item(item, previous)

    async def _transcript(self, event: Transcript) -> None:
        item_id = self._user_items.pop(event.item_id, None)
        if item_id is None:
            return
        text = event.text.strip()
        with contextlib.suppress(RealtimeError):  # the client may have deleted the item meanwhile
            self.items.get(item_id).content[0].transcript = text
        if self.config.transcription is None:
            return
        # Conversation sessions get the whole transcript as one delta, as OpenAI does for whisper-1, so
        # clients that build captions from deltas alone see it too.
        rest = self._captions.finish(text) if self._captions is not None else text
        if rest:
            await self.send(
                "conversation.item.input_audio_transcription.delta",
                item_id=item_id,
                content_index=0,
                delta=rest,
            )
        await self.send(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=text,
            usage={"type": "duration", "seconds": round(event.duration_s, 3)},
        )

    async def _caption_delta(self, delta: str) -> None:
        item_id = self._pending_item_id or new_id("item")
        self._pending_item_id = item_id
        await self.send(
            "conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0, delta=delta
        )

    def _response_object(self, r: _Response, status: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": r.id,
            "object": "realtime.response",
            "status": status,
            "status_details": None,
            "output": [i.wire(self.wire.beta) for i in r.outputs] if status != "in_progress" else [],
            "conversation_id": None if r.out_of_band else "conv_" + self.session_id.removeprefix("sess_"),
            "metadata": r.metadata,
            "usage": None,
        }
        if self.wire.beta:
            body["modalities"] = ["text", "audio"] if r.audio else ["text"]
        else:
            body["output_modalities"] = list(r.modalities)
            body["audio"] = {"output": {"format": self.config.output_format.ga(), "voice": self.config.voice}}
        return body | extra

    async def _response_started(self, event: ResponseStarted) -> None:
        request = self._requests.pop(event.response_id, None) or _Request(self.config.output_modalities)
        self._requests.clear()  # a reply that failed before it started leaves nothing behind
        r = _Response(
            new_id("resp"),
            event.response_id,
            request.modalities,
            request.out_of_band,
            request.metadata,
            request.max_tokens or self.core.config.max_response_tokens,
            request.tools or self.config.tools,
        )
        self._response = r
        self._idle.close()
        await self.send("response.created", response=self._response_object(r, "in_progress"))
        if not r.tools.active:
            await self._open_message(r)

    async def _open_message(self, r: _Response) -> Item:
        """The reply's assistant message: announced, added to the conversation, its content part opened."""
        if r.item is not None:
            return r.item
        item = r.item = Item(new_id("item"), "assistant", [], status="in_progress")
        await self._add_output(r, item)
        if not r.out_of_band:
            previous = self.items.add(item, make_room=True)
            await self.send(
                "conversation.item.added", previous_item_id=previous, item=item.wire(self.wire.beta)
            )
        part = "output_audio" if r.audio else "output_text"
        item.content.append(ContentPart(part, text="" if part == "output_text" else None, transcript=""))
        await self.send("response.content_part.added", **self._ids(r), part=item.content[0].event_part())
        return item

    async def _add_output(self, r: _Response, item: Item) -> None:
        """An output item of the reply (its message, or a function call): listed, then announced."""
        r.outputs.append(item)
        await self.send(
            "response.output_item.added",
            response_id=r.id,
            output_index=len(r.outputs) - 1,
            item=item.wire(self.wire.beta),
        )

    def _ids(self, r: _Response) -> dict[str, Any]:
        assert r.item is not None
        output_index = r.outputs.index(r.item)
        return {"response_id": r.id, "item_id": r.item.id, "output_index": output_index, "content_index": 0}

    def _reply_tools(self) -> ToolConfig:
        """The tools of the reply being made (the core calls the responder after ResponseStarted)."""
        return self._response.tools if self._response is not None else self.config.tools

    async def _tool_call(self, event: ResponseEvent) -> None:
        """A piece of the model's function call: the first opens its item, the rest stream its arguments."""
        r = self._response
        if r is None:
            return
        item = r.calls.get(event.call_id)
        if item is None:
            item = Item(
                new_id("item"),
                "",
                [],
                status="in_progress",
                type="function_call",
                call_id=event.call_id or new_id("call"),
                name=event.name,
            )
            r.calls[event.call_id] = item
            await self._add_output(r, item)
        if event.text:
            item.arguments += event.text
            await self.send(
                "response.function_call_arguments.delta",
                response_id=r.id,
                item_id=item.id,
                output_index=r.outputs.index(item),
                call_id=item.call_id,
                delta=event.text,
            )

    async def _text_delta(self, event: TextDelta) -> None:
        r = self._response
        if r is None or r.core_id != event.response_id:
            return
        await self._open_message(r)
        r.transcript += event.text
        name = "response.output_audio_transcript.delta" if r.audio else "response.output_text.delta"
        await self.send(name, **self._ids(r), delta=event.text)

    async def _audio_out(self, event: AudioOut) -> None:
        r = self._response
        if r is None or r.core_id != event.response_id:
            return
        await self._open_message(r)
        data = self._encoder.encode(event.pcm)
        if r.first_audio is None:
            r.first_audio = time.monotonic()
        r.wire_bytes += len(data)
        await self.send("response.output_audio.delta", **self._ids(r), delta=encode_base64(data))

    async def _close_message(self, r: _Response, event: ResponseDone, status: str) -> None:
        if r.item is None:
            return
        part = r.item.content[0]
        r.item.status = "completed" if status == "completed" else "incomplete"
        ids = self._ids(r)
        if r.audio:
            part.transcript, part.spans = self._spoken(event)
            part.audio_ms = float(event.audio_ms)
            await self.send("response.output_audio.done", **ids)
            await self.send("response.output_audio_transcript.done", **ids, transcript=part.transcript)
        else:
            part.text = event.text.strip()
            await self.send("response.output_text.done", **ids, text=part.text)
        await self.send("response.content_part.done", **ids, part=part.event_part())
        item = r.item.wire(self.wire.beta)
        await self.send(
            "response.output_item.done", response_id=r.id, output_index=ids["output_index"], item=item
        )
        if not r.out_of_band:
            await self.send("conversation.item.done", item=item)

    async def _close_calls(self, r: _Response, status: str) -> None:
        """Each call ends with its arguments; only a whole call (the reply completed and its arguments are
        JSON) joins the conversation, so a cancelled or cut-short reply leaves no half call behind."""
        for item in r.calls.values():
            whole = status == "completed" and _is_json(item.arguments)
            item.status = "completed" if whole else "incomplete"
            index = r.outputs.index(item)
            await self.send(
                "response.function_call_arguments.done",
                response_id=r.id,
                item_id=item.id,
                output_index=index,
                call_id=item.call_id,
                name=item.name,
                arguments=item.arguments,
            )
            wire = item.wire(self.wire.beta)
            await self.send("response.output_item.done", response_id=r.id, output_index=index, item=wire)
            if whole and not r.out_of_band:
                previous = self.items.add(item, make_room=True)
                await self.send("conversation.item.added", previous_item_id=previous, item=wire)
                await self.send("conversation.item.done", previous_item_id=previous, item=wire)

    async def _response_done(self, event: ResponseDone) -> None:
        r = self._response
        if r is None or r.core_id != event.response_id:
            return
        self._response = None
        status = {"completed": "completed", "interrupted": "cancelled"}.get(event.status, "failed")
        output_tokens = int(event.usage.get("completion_tokens", 0))
        if status == "completed" and output_tokens >= r.max_tokens > 0:
            status = "incomplete"  # the model was stopped by the token limit, as OpenAI reports it
        if not r.calls:
            await self._open_message(r)  # a reply with neither text nor a call is still one message
        await self._close_message(r, event, status)
        await self._close_calls(r, status)
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": r.cancel_reason or "client_cancelled"}
        elif status == "incomplete":
            details = {"type": "incomplete", "reason": "max_output_tokens"}
        elif status == "failed":
            details = {"type": "failed", "error": {"type": "server_error", "code": "response_failed"}}
        prompt_chars = sum(len(m.content) for m in self.items.messages(self._history.budget_chars))
        input_tokens = prompt_chars // CHARS_PER_TOKEN
        usage = {
            "total_tokens": input_tokens + output_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0},
        }
        body = self._response_object(r, status, status_details=details, usage=usage)
        # `timings` is this server's addition (stage latencies from the core); OpenAI clients ignore it.
        await self.send("response.done", response=body, timings=event.timings)
        # Audio is paced in real time from its first delta, so what is left to play is its length less the
        # time since then.
        played_ms = (time.monotonic() - r.first_audio) * 1000 if r.first_audio is not None else 0.0
        audio_ms = r.item.content[0].audio_ms if r.item is not None and r.audio else 0.0
        self._idle.open(audio_ms - played_ms)

    def _spoken(self, event: ResponseDone) -> tuple[str, list[SpokenSpan]]:
        """The transcript of the audio sent, and where each sentence (and word) sits in it in time.

        Built from the core's segments: every sentence's text, audio length and samples sent, with the
        synthesizer's word timings. A reply cut short keeps the words heard by the end of its audio, by the
        same rule `conversation.item.truncate` applies later."""
        segments = event.segments
        if not any(seg.text for seg in segments):
            # No sentence texts (a responder that makes its own audio, e.g. Omni): the reply's text spread
            # evenly over its audio is the best map there is.
            text = event.text.strip()
            if not text or not event.audio_ms:
                return text, []
            return text, [SpokenSpan(0.0, float(event.audio_ms), 0, len(text))]
        text = ""
        spans: list[SpokenSpan] = []
        at = 0.0  # the item's audio is the sent audio: whole sentences, then at most one cut short
        for seg in segments:
            if seg.sent_samples <= 0:
                break
            raw = seg.text or ""
            lead = len(raw) - len(raw.lstrip())
            body = raw.strip()
            if text and body:
                text += " "
            start = len(text)
            text += body
            words = tuple(
                WordSpan(
                    at + w.start * 1000,
                    at + w.end * 1000,
                    start + w.text_start - lead,
                    start + w.text_end - lead,
                )
                for w in seg.words
                if w.text_start >= lead and w.text_end - lead <= len(body)
            )
            # A sentence still being synthesized when the reply stopped spans at least its estimated length.
            length = seg.expected_samples
            spans.append(SpokenSpan(at, at + length * 1000 / self.rate, start, len(text), words))
            at += min(seg.sent_samples, length) * 1000 / self.rate
            if not seg.heard_whole:
                break
        return cut_at(text, spans, at)

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def admit(self) -> bool:
        if self.config.type == "realtime" and self.engines.responder is None:
            err = RealtimeError(
                "engine_unavailable",
                f"The {self.engines.kind} engine has no conversation model; open a transcription session "
                "with ?intent=transcription.",
                type="server_error",
            )
            await self.close_unserved(Wire.error(err), "no conversation model")
            return False
        return True

    async def start(self) -> None:
        refused: RealtimeError | None = None
        try:
            self._apply(self.config)
        except RealtimeError as err:
            # The engines cannot take the defaults now (a TTS server still starting cannot resolve the
            # voice): the client hears why, and the session stays open for a later session.update.
            refused = err
        from gateway.audio import vad

        await asyncio.to_thread(vad.load)  # the first session pays the model load off the loop
        await self.send("session.created", session=self._session())
        if refused is not None:
            await self.error(refused)

    async def aclose(self) -> None:
        if self._captions is not None:
            await self._captions.aclose()
        await self.core.close()


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
