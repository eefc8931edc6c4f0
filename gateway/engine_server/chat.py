"""`POST /v1/chat/completions` in Qwen3-Omni's shapes (fact sheet §2), on the embedded CPU engines.

Audio in: base64 WAV content parts (`input_audio`, or `audio_url` with a `data:` URL), transcribed by
faster-whisper. Text out: the embedded LLM, or the transcript itself when the instruction asks for ASR (§5).
Audio out: Piper speaks the reply sentence by sentence as the text streams, cut into code2wav-sized windows,
each sent as a complete base64 WAV (24 kHz PCM16 mono) in its own `modality: "audio"` chunk.

Shapes as a real vLLM-Omni 0.30.0 Qwen3-Omni server answered: streamed, text chunks first (the first one
`{"role": "assistant", "content": ""}`), then audio chunks, each with `audio_metadata`, the last one with
`finish_reason: "stop"`, then the usage-only chunk and `[DONE]`; not streamed, ONE choice whose message
has both `content` and `audio` (`id`, `data`, `expires_at`, `transcript`), plus `audio_metadata` on the
choice (serving_chat.py `_merge_audio_choices`, vLLM-Omni #7376).

Tools as vLLM-Omni 0.30.0 serving_chat.py answers them: `tools` and `tool_choice` checked as vLLM's
`ChatCompletionRequest.check_tool_usage` does; a call streams as `delta.tool_calls`, its first delta
`{"id": "chatcmpl-tool-...", "type": "function", "index": 0, "function": {"name", "arguments"}}`, the
rest `{"index": 0, "function": {"arguments"}}`, and `finish_reason` is "stop" for a named tool_choice and
"tool_calls" otherwise. The embedded LLM makes the call (gateway/engines/embedded/tools.py): a named or
required choice is decoded under the function's JSON schema; "auto" answers in text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.audio.decode import AudioDecodeError, AudioTooLongError, decode_audio
from gateway.audio.pcm import wav_bytes
from gateway.audio.text import split_sentences
from gateway.engine_server.errors import VllmError
from gateway.engine_server.models import SAMPLE_RATE, EngineSet
from gateway.engines.base import (
    ChatMessage,
    ConversationRequest,
    DetailedTranscriber,
    NamedTool,
    ResponseEvent,
    SynthesisRequest,
    Tool,
    ToolCall,
    ToolChoice,
)

router = APIRouter()

OMNI_SPEAKERS = ("aiden", "chelsie", "ethan")  # talker_config.speaker_id (fact sheet §2)
_ASR_PROMPT = re.compile(r"\b(asr|transcri\w*)\b", re.IGNORECASE)
# The gateway's translation instruction (gateway/engines/vllm_omni/protocol.py): Whisper's translate task
# stands in for what the real model does with it.
_TRANSLATE_PROMPT = re.compile(r"\btranslat\w*\b.*\benglish\b", re.IGNORECASE | re.DOTALL)
# Audio windows like async_chunk's connector: 4 codec frames first, then 25 (a frame is 1920 samples).
FIRST_WINDOW = 4 * 1920 * 2
NEXT_WINDOW = 25 * 1920 * 2
MAX_INPUT_AUDIO_S = 600.0


class ChatRequest(BaseModel):
    """vLLM's `ChatCompletionRequest` subset; the Omni extras are top-level keys (extra fields allowed)."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(..., min_length=1)
    model: str | None = None
    modalities: list[str] | None = None
    speaker: str | None = None
    voice: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


def _tools(req: ChatRequest) -> tuple[tuple[Tool, ...], ToolChoice]:
    """`tools` / `tool_choice` with vLLM's checks and messages (protocol.py `check_tool_usage`)."""
    if req.tools == []:
        raise VllmError(
            400,
            "`tools` must not be an empty array. Either provide at least one tool or omit the field "
            "entirely.",
            "tools",
        )
    tools: list[Tool] = []
    for raw in req.tools or []:
        function = raw.get("function")
        if raw.get("type", "function") != "function" or not isinstance(function, dict):
            raise VllmError(400, "each tool must be {'type': 'function', 'function': {...}}", "tools")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise VllmError(400, "a tool's function needs a name", "tools")
        params = function.get("parameters") or {}
        tools.append(
            Tool(name, str(function.get("description") or ""), params if isinstance(params, dict) else {})
        )
    choice = req.tool_choice if req.tool_choice is not None else "auto"
    if choice == "none" or (choice == "auto" and req.tool_choice is None):
        return tuple(tools), "none" if choice == "none" else "auto"
    if not tools:
        raise VllmError(400, "When using `tool_choice`, `tools` must be set.", "tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise VllmError(
                400,
                f'Invalid value for `function`: `{function}` in `tool_choice`! Correct usage: `{{"type": '
                '"function", "function": {"name": "my_function"}}`',
                "tool_choice.function",
            )
        if not any(t.name == name for t in tools):
            raise VllmError(
                400,
                "The tool specified in `tool_choice` does not match any of the specified `tools`",
                "tool_choice",
            )
        return tuple(tools), NamedTool(name)
    if choice not in ("auto", "required"):
        raise VllmError(
            400,
            f'Invalid value for `tool_choice`: {choice}! Only named tools, "none", "auto" or "required" are '
            "supported.",
            "tool_choice",
        )
    return tuple(tools), "required" if choice == "required" else "auto"


def _message_of(role: str, m: dict[str, Any], turn: Turn) -> ChatMessage:
    """A prompt message, with an assistant's earlier calls or a tool's result (OpenAI chat shapes)."""
    if role == "tool":
        return ChatMessage("tool", turn.text, tool_call_id=str(m.get("tool_call_id") or ""))
    calls = tuple(
        ToolCall(
            str(c.get("id") or ""), str(c["function"]["name"]), str(c["function"].get("arguments") or "")
        )
        for c in m.get("tool_calls") or ()
        if isinstance(c, dict) and isinstance(c.get("function"), dict) and "name" in c["function"]
    )
    return ChatMessage(role, turn.text, calls)


@dataclass
class Turn:
    text: str
    audio: list[bytes]


def _decode_data_url(url: str) -> bytes:
    head, _, payload = url.partition(",")
    if not head.startswith("data:") or ";base64" not in head:
        raise VllmError(400, "this server accepts audio only as base64 data: URLs")
    return _b64(payload)


def _b64(payload: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise VllmError(400, "audio content is not valid base64") from None


def _parse_content(content: Any) -> Turn:
    if content is None:
        return Turn("", [])
    if isinstance(content, str):
        return Turn(content, [])
    if not isinstance(content, list):
        raise VllmError(400, "message content must be a string or a list of parts")
    texts: list[str] = []
    audio: list[bytes] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "input_audio":
            data = (part.get("input_audio") or {}).get("data")
            if not isinstance(data, str):
                raise VllmError(400, "input_audio.data must be a base64 string")
            audio.append(_b64(data))
        elif kind == "audio_url":
            url = (part.get("audio_url") or {}).get("url")
            if not isinstance(url, str):
                raise VllmError(400, "audio_url.url must be a string")
            audio.append(_decode_data_url(url))
        else:
            raise VllmError(400, f"content part type {kind!r} is not supported by this server")
    return Turn(" ".join(t for t in texts if t).strip(), audio)


async def _transcribe(engines: EngineSet, clips: list[bytes], translate: bool = False) -> str:
    assert engines.asr is not None
    asr = engines.asr
    if translate and not (isinstance(asr, DetailedTranscriber) and asr.can_translate):
        raise VllmError(
            400, "this server's speech model cannot translate (ASR_MODEL=tiny.en is English-only)"
        )
    texts = []
    for raw in clips:
        try:
            decoded = await asyncio.to_thread(decode_audio, raw, engines.asr.sample_rate, MAX_INPUT_AUDIO_S)
        except (AudioDecodeError, AudioTooLongError) as exc:
            raise VllmError(400, f"the audio could not be decoded: {exc}") from None
        if translate:
            assert isinstance(asr, DetailedTranscriber)
            result = await asr.transcribe_detailed(decoded.samples, None, words=False, task="translate")
        else:
            result = await asr.transcribe(decoded.samples, "en")
        texts.append(result.text)
    return " ".join(t for t in texts if t).strip()


def audio_metadata(wav_b64: str) -> dict[str, Any]:
    """`audio_metadata` of an audio chunk or choice (vLLM-Omni 0.30.0 audio_utils_mixin.py)."""
    frames = (len(base64.b64decode(wav_b64)) - 44) // 2
    return {"format": "wav", "sample_rate_hz": SAMPLE_RATE, "frame_count": frames, "channels": 1}


def _chunk(
    cid: str,
    created: int,
    model: str,
    delta: dict[str, Any],
    modality: str,
    finish: str | None = None,
    usage: dict[str, int] | None = None,
    first: bool = False,
) -> str:
    """One `chat.completion.chunk` with the fields the real server sends for its kind."""
    choice: dict[str, Any] = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    event: dict[str, Any] = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if modality == "audio":
        choice.update(stop_reason=None, token_ids=None, audio_metadata=audio_metadata(delta["content"]))
        event.update(usage=usage, metrics=None)
    elif first:
        event.update(prompt_token_ids=None, prompt_text=None)
    else:
        choice["token_ids"] = None
        event["metrics"] = {}
    event["modality"] = modality
    return f"data: {json.dumps(event, separators=(',', ':'))}\n\n"


class AudioWindows:
    """Cuts the reply's PCM into windows, each becomes a self-contained WAV file (base64)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._size = FIRST_WINDOW

    def push(self, pcm: bytes) -> list[str]:
        self._buffer += pcm
        out = []
        while len(self._buffer) >= self._size:
            out.append(self._wav(self._buffer[: self._size]))
            self._buffer = self._buffer[self._size :]
            self._size = NEXT_WINDOW
        return out

    def flush(self) -> list[str]:
        out = [self._wav(self._buffer)] if self._buffer else []
        self._buffer = b""
        return out

    @staticmethod
    def _wav(pcm: bytes) -> str:
        return base64.b64encode(wav_bytes(pcm, SAMPLE_RATE)).decode("ascii")


class Completion:
    """One request's prepared inputs; `text_deltas()` and `speak()` produce the outputs."""

    def __init__(self, engines: EngineSet, req: ChatRequest) -> None:
        self.engines = engines
        self.req = req
        if req.model is not None and req.model != engines.omni_name:  # vLLM checks the model first
            raise VllmError(404, f"The model `{req.model}` does not exist.", "model")
        modalities = req.modalities or ["text", "audio"]  # omitted = the engine's outputs: text + audio
        bad = [m for m in modalities if m not in ("text", "audio")]
        if bad or not modalities:
            raise VllmError(400, f"unsupported modalities {bad}; this server outputs text and audio")
        self.want_text = "text" in modalities
        self.want_audio = "audio" in modalities
        speaker = (req.speaker or req.voice or "").lower()
        if speaker and speaker not in OMNI_SPEAKERS:
            raise VllmError(400, f"Invalid speaker '{speaker}'. Supported: {', '.join(OMNI_SPEAKERS)}")
        self.model = engines.omni_name
        self.tools, self.tool_choice = _tools(req)
        self.max_tokens = req.max_completion_tokens or req.max_tokens or 256
        self.history: list[ChatMessage] = []
        self.asr_only = False
        self.transcript = ""
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def prepare(self) -> None:
        turns: list[tuple[str, Turn, dict[str, Any]]] = []
        for m in self.req.messages:
            role = m.get("role")
            if role not in ("system", "user", "assistant", "tool"):
                raise VllmError(400, f"unsupported message role {role!r}")
            turns.append((role, _parse_content(m.get("content")), m))
        last_role, last, _ = turns[-1]
        if last_role not in ("user", "tool"):
            raise VllmError(400, "the last message must be the user's or a tool's result")
        if last.audio:
            translate = bool(_TRANSLATE_PROMPT.search(last.text))
            self.transcript = await _transcribe(self.engines, last.audio, translate)
            self.asr_only = translate or bool(_ASR_PROMPT.search(last.text))
        for role, turn, m in turns[:-1]:
            if turn.text or m.get("tool_calls") or role == "tool":
                self.history.append(_message_of(role, m, turn))
        if last_role == "tool":
            self.history.append(_message_of("tool", turns[-1][2], last))
        else:
            user_text = " ".join(
                t for t in (self.transcript, "" if self.asr_only else last.text) if t
            ).strip()
            self.history.append(ChatMessage("user", user_text or "..."))
        # Approximate prompt size (whitespace words): the CPU LLM does not report its prompt tokens.
        self.prompt_tokens = sum(len(m.content.split()) for m in self.history)

    async def events(self) -> AsyncIterator[ResponseEvent]:
        """The reply as text and tool-call events."""
        if self.asr_only:
            self.completion_tokens = len(self.transcript.split())
            if self.transcript:
                yield ResponseEvent(kind="text", text=self.transcript)
            return
        request = ConversationRequest(
            history=self.history, max_tokens=self.max_tokens, tools=self.tools, tool_choice=self.tool_choice
        )
        gen = self.engines.llm.respond(request)
        try:
            async for event in gen:
                if event.kind in ("text", "tool_call") and (event.text or event.name):
                    self.completion_tokens += 1
                    yield event
        finally:
            await gen.aclose()

    async def text_deltas(self) -> AsyncIterator[str]:
        async for event in self.events():
            if event.kind == "text":
                yield event.text

    async def speak(self, text: str) -> bytes:
        assert self.engines.tts is not None
        if not text.strip():
            return b""
        gen = self.engines.tts.stream(SynthesisRequest(text=text, voice="default", language="en"))
        try:
            return b"".join([c.pcm async for c in gen])
        finally:
            await gen.aclose()

    def usage(self, completion: int | None = None) -> dict[str, int]:
        done = self.completion_tokens if completion is None else completion
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


class ToolCallDeltas:
    """The model's call as vLLM streams it: the first delta holds the id, type, name and the first piece of
    the arguments; later deltas hold only the index and more arguments."""

    def __init__(self) -> None:
        self.calls: dict[str, ToolCall] = {}
        self._pending: dict[str, Any] | None = None  # the first delta, until its first arguments come

    def delta(self, event: ResponseEvent) -> dict[str, Any] | None:
        known = self.calls.get(event.call_id)
        if known is None:
            self.calls[event.call_id] = ToolCall("chatcmpl-tool-" + secrets.token_hex(16), event.name, "")
            known = self.calls[event.call_id]
            self._pending = {
                "id": known.id,
                "type": "function",
                "index": 0,
                "function": {"name": event.name, "arguments": ""},
            }
        if not event.text:
            return None
        self.calls[event.call_id] = ToolCall(known.id, known.name, known.arguments + event.text)
        if self._pending is not None:
            first, self._pending = self._pending, None
            first["function"]["arguments"] = event.text
            return first
        return {"index": 0, "function": {"arguments": event.text}}

    def flush(self) -> dict[str, Any] | None:
        first, self._pending = self._pending, None
        return first

    def finish_reason(self, choice: ToolChoice) -> str:
        # vLLM: "tool_calls" when a tool was called for "auto" or "required", "stop" for a named choice.
        return "tool_calls" if self.calls and not isinstance(choice, NamedTool) else "stop"


async def _stream(c: Completion, metrics: Any) -> AsyncIterator[str]:
    cid = f"chatcmpl-{secrets.token_hex(12)}"
    created = int(time.time())
    t0 = time.perf_counter()
    windows = AudioWindows()
    held: str | None = None  # the last audio chunk is held back: it carries finish_reason
    pending = ""
    first_audio = True

    def audio_chunks(pcm: bytes, final: bool = False) -> list[str]:
        nonlocal held, first_audio
        out = []
        for b64 in [*windows.push(pcm), *(windows.flush() if final else [])]:
            if held is not None:
                out.append(held)
            if first_audio:
                metrics.ttfp.labels(stage="omni").observe(time.perf_counter() - t0)
                first_audio = False
            held = _chunk(
                cid, created, c.model, {"role": "assistant", "content": b64}, "audio", usage=c.usage(0)
            )
        return out

    with metrics.running("omni"):
        if c.want_text:
            yield _chunk(cid, created, c.model, {"role": "assistant", "content": ""}, "text", first=True)
        calls = ToolCallDeltas()
        async for event in c.events():
            if event.kind == "tool_call":
                call = calls.delta(event)
                if call is not None:
                    yield _chunk(cid, created, c.model, {"tool_calls": [call]}, "text")
                continue
            delta = event.text
            if c.want_text:
                yield _chunk(cid, created, c.model, {"content": delta}, "text")
            if c.want_audio:
                pending += delta
                spans = split_sentences(pending)
                if len(spans) >= 2:
                    done, pending = pending[: spans[-1].start], pending[spans[-1].start :]
                    for out in audio_chunks(await c.speak(done)):
                        yield out
        if c.want_audio:
            for out in audio_chunks(await c.speak(pending), final=True):
                yield out
            if held is not None:
                yield held.replace('"finish_reason":null', '"finish_reason":"stop"', 1)
        unsent = calls.flush()  # a call whose arguments never came
        if unsent is not None:
            yield _chunk(cid, created, c.model, {"tool_calls": [unsent]}, "text")
        if not c.want_audio or held is None:
            finish = calls.finish_reason(c.tool_choice)
            yield _chunk(cid, created, c.model, {"content": ""}, "text", finish=finish)
        if (c.req.stream_options or {}).get("include_usage"):
            last = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": c.model,
                "choices": [],
                "usage": c.usage(),
            }
            yield f"data: {json.dumps(last, separators=(',', ':'))}\n\n"
        yield "data: [DONE]\n\n"
        metrics.finished("omni", time.perf_counter() - t0, c.prompt_tokens, c.completion_tokens)


def _message(content: str | None, audio: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": None,
        "audio": audio,
        "function_call": None,
        "reasoning": None,
    }


async def _full(c: Completion, metrics: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    with metrics.running("omni"):
        calls = ToolCallDeltas()
        text = ""
        async for event in c.events():
            if event.kind == "tool_call":
                calls.delta(event)
            else:
                text += event.text
        message = _message(text if c.want_text else None, None)
        if calls.calls:
            message["tool_calls"] = [
                {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                for t in calls.calls.values()
            ]
        choice: dict[str, Any] = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": calls.finish_reason(c.tool_choice),
            "stop_reason": None,
            "token_ids": None,
        }
        if c.want_audio:
            pcm = await c.speak(text)
            data = base64.b64encode(wav_bytes(pcm, SAMPLE_RATE)).decode("ascii")
            choice["message"]["audio"] = {
                "id": f"audio-{secrets.token_hex(8)}",
                "data": data,
                "expires_at": int(time.time()) + 86400,
                "transcript": "",
            }
            # Text and audio in ONE choice (vLLM-Omni #7376); an audio-only answer has no content.
            choice["audio_metadata"] = audio_metadata(data)
    metrics.finished("omni", time.perf_counter() - t0, c.prompt_tokens, c.completion_tokens)
    usage: dict[str, Any] = {**c.usage(), "prompt_tokens_details": None, "completion_tokens_details": None}
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": c.model,
        "choices": [choice],
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage,
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "metrics": None,
    }


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatRequest, request: Request) -> Response:
    completion = Completion(request.app.state.engine_set, body)
    await completion.prepare()
    metrics = request.app.state.server_metrics
    if body.stream:
        return StreamingResponse(_stream(completion, metrics), media_type="text/event-stream")
    return JSONResponse(await _full(completion, metrics))
