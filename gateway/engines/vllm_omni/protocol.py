"""vLLM-Omni's wire shapes: request builders and response parsers, pure functions without I/O.

Every shape is read from vLLM-Omni's own source (`vllm_omni/entrypoints/openai/serving_chat.py`,
`serving_speech.py`, `protocol/audio.py`; see docs/vllm-omni.md) and checked against what a real vLLM-Omni
0.30.0 server answered (docs/vllm-omni.md, "What the real 0.30.0 server answers"); the fact-sheet section is
named where a field is relied on. Parsers are strict about what they use and lenient about everything else,
because the server adds fields between releases.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.audio.pcm import float_to_pcm16, wav_bytes

# The system prompt every vLLM-Omni example sends (fact sheet §2, "Minimal request").
QWEN_OMNI_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
    "auditory and visual inputs, as well as generating text and speech."
)
# Fact sheet §5: the wording third-party code uses; /v1/audio/transcriptions is not served for Qwen3-Omni.
ASR_INSTRUCTION = "Please output the ASR result of the audio."
# Qwen3-Omni is multilingual end to end: translation is the same request with another instruction (the
# model card's speech translation); "only" keeps the answer to the English text, as OpenAI's route returns.
TRANSLATE_INSTRUCTION = (
    "Please translate the speech in the audio into English and output only the English text."
)
# Fact sheet §2 "Requesting audio output": `talker_config.speaker_id` of Qwen3-Omni.
OMNI_SPEAKERS = ("ethan", "chelsie", "aiden")
# Fact sheet §3 "Request fields": `language` is Auto or one of these names (`codec_language_id`).
QWEN_TTS_LANGUAGES = (
    "Chinese",
    "English",
    "Japanese",
    "Korean",
    "German",
    "French",
    "Russian",
    "Portuguese",
    "Spanish",
    "Italian",
)
# Fact sheet §2 "Non-streaming response": "Qwen3-Omni omits sr and runs at 24kHz"; §3 Output: TTS is 24 kHz.
BACKEND_SAMPLE_RATE = 24000
DONE = "[DONE]"
# The wire format this client was built and tested against. vLLM-Omni releases track vLLM's major.minor
# (vLLM-Omni 0.30.0 `version.py` warns unless vLLM is 0.30.x), and the server's `GET /version` is vLLM's
# (`{"version": "0.30.0"}`), so the major.minor it reports names the vLLM-Omni wire format too.
WIRE_VERSION = (0, 30)
WIRE_VERSION_TEXT = "0.30.0"
# vLLM-Omni 0.30.0 serving_speech.py `_get_available_voices`: every `GET /v1/audio/voices` lists this
# placeholder beside the model's real speakers. A request naming it is sent with no voice at all, which a
# CustomVoice model answers with its default speaker and a Base model with 400 "Base task requires
# 'ref_audio' or 'speaker_embedding'". It never names a speaker, so it is never offered as one.
DEFAULT_VOICE_PLACEHOLDER = "default"


class ProtocolError(ValueError):
    """The backend's answer does not have the shape vLLM-Omni documents (maps to 502)."""


def parse_version(text: str) -> tuple[int, int] | None:
    """`"0.30.0"`, `"v0.30.1rc2"`, `"0.30.0+cpu"` -> (0, 30); None when it names no release."""
    match = re.match(r"v?(\d+)\.(\d+)", text.strip())
    return (int(match[1]), int(match[2])) if match else None


def wire_version_matches(version: str) -> bool:
    """True when a server's `GET /version` names the 0.30.x wire format this client speaks."""
    return parse_version(version) == WIRE_VERSION


# -- requests ----------------------------------------------------------------------------------


def wav_base64(samples: Any, rate: int) -> str:
    """Float32 mono samples -> base64 of a PCM16 WAV file."""
    pcm = float_to_pcm16(np.asarray(samples, dtype=np.float32))
    return base64.b64encode(wav_bytes(pcm, rate)).decode("ascii")


def audio_content_part(b64_wav: str) -> dict[str, Any]:
    """The user's audio: `{"type":"input_audio","input_audio":{"data":<B64 WAV>,"format":"wav"}}`.

    Fact sheet §2 "Audio input": accepted by vLLM's chat parser and built by vLLM-Omni itself
    (`serving_video_stream.py`); the minimal request of §2 uses it.
    """
    return {"type": "input_audio", "input_audio": {"data": b64_wav, "format": "wav"}}


def chat_request(
    messages: list[dict[str, Any]],
    *,
    model: str,
    modalities: Sequence[str],
    speaker: str | None,
    stream: bool,
    max_tokens: int,
    temperature: float | None = None,
) -> dict[str, Any]:
    """`POST /v1/chat/completions` body (fact sheet §2).

    `modalities` and `speaker` are *top-level* extra keys (the OpenAI `audio` object is ignored, issue #602);
    `speaker` is always sent because the default voice changed between releases. `model` is optional and,
    when present, must be the served name, so it is left out until /v1/models has told us that name.
    """
    body: dict[str, Any] = {
        "messages": messages,
        "modalities": list(modalities),
        "stream": stream,
        "max_tokens": max_tokens,
    }
    if model:
        body["model"] = model
    if speaker and "audio" in modalities:
        body["speaker"] = speaker
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        # vLLM sends `usage` on stream chunks only when asked (OpenAI `stream_options`).
        body["stream_options"] = {"include_usage": True}
    return body


def speech_request(
    text: str,
    *,
    model: str,
    language: str,
    voice: str | None = None,
    ref_audio: str | None = None,
    ref_text: str | None = None,
    task_type: str | None = "Base",
    stream: bool = True,
    response_format: str = "pcm",
    seed: int | None = None,
) -> dict[str, Any]:
    """`POST /v1/audio/speech` body for Qwen3-TTS (fact sheet §3).

    Streaming: `stream: true` alone gets server-sent events (`speech.audio.delta` with base64 PCM) from
    vLLM-Omni 0.30.0; raw PCM16 24 kHz mono bytes come only with `stream_format: "audio"` (protocol/audio.py
    `is_raw_audio_stream`), so it is always sent. `speed` is never sent with `stream` (400 "... is not
    supported with speed adjustment"); the gateway changes tempo itself. The 0.6B Base model has no built-in
    voices: each request names an uploaded voice (`voice`) or carries `ref_audio` (a `data:` URL; raw base64
    is a 400) with `ref_text` (its exact transcript), and `task_type: "Base"`.
    """
    body: dict[str, Any] = {
        "input": text,
        "response_format": response_format,
        "stream": stream,
        "language": language,
    }
    if stream:
        body["stream_format"] = "audio"
    if model:
        body["model"] = model
    if task_type:
        body["task_type"] = task_type
    if voice:
        body["voice"] = voice
    if ref_audio:
        body["ref_audio"] = ref_audio
    if ref_text:
        body["ref_text"] = ref_text
    if seed is not None:
        body["seed"] = seed
    return body


# -- responses ---------------------------------------------------------------------------------


def speech_sse_pcm(event: dict[str, Any]) -> bytes | None:
    """One `/v1/audio/speech` SSE event -> its PCM16 bytes (`speech.audio.delta`), or None for the final
    `speech.audio.done` (usage only). vLLM-Omni 0.30.0 serving_speech.py `_generate_audio_sse_events`: the
    base64 chunk is in `audio` (not `delta`); a failure mid-stream is a `speech.audio.error` event."""
    kind = event.get("type")
    if kind == "speech.audio.delta":
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise ProtocolError("a speech.audio.delta event carries no base64 `audio`")
        try:
            return base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError("a speech.audio.delta event's audio is not valid base64") from None
    if kind == "speech.audio.done":
        return None
    err = event.get("error")
    if kind == "speech.audio.error" or err is not None:
        message = err.get("message") if isinstance(err, dict) else err
        raise ProtocolError(f"the server reported an error mid-stream: {message}")
    return b""  # an event type this client does not use: skip it


def offered_voices(listing: dict[str, Any]) -> list[str]:
    """`GET /v1/audio/voices` -> the server's own speakers: `voices` without the placeholder "default"
    (see DEFAULT_VOICE_PLACEHOLDER) and without uploaded voices (listed there too, but they belong to
    whoever uploaded them). A Qwen3-TTS Base model answers `{"voices":["default"],"uploaded_voices":[]}`:
    no speaker at all."""
    uploaded = {
        str(v.get("name", "")).lower() for v in listing.get("uploaded_voices") or [] if isinstance(v, dict)
    }
    names = [str(v).lower() for v in listing.get("voices") or [] if isinstance(v, str)]
    return [v for v in names if v != DEFAULT_VOICE_PLACEHOLDER and v not in uploaded]


def is_lost_voice_error(message: str) -> bool:
    """A 400 saying the server does not know a voice we uploaded (restarted with empty storage, or the file
    is gone): "Base task with built-in speaker 'x' requires 'ref_audio' for voice cloning" /
    "Data file for uploaded speaker 'x' not found on disk" (vLLM-Omni 0.30.0 tts_adapters/qwen3_tts.py)."""
    return "requires 'ref_audio'" in message or "not found on disk" in message


@dataclass(frozen=True)
class StreamChunk:
    """One SSE `chat.completion.chunk`, classified by its top-level `modality` (fact sheet §2 "Streaming")."""

    modality: str  # "text" | "audio"
    text: str = ""  # text delta (modality text)
    audio_b64: str = ""  # a complete base64 WAV (modality audio): `delta.content`, not `delta.audio`
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None


def parse_sse_data(line: str) -> dict[str, Any] | str | None:
    """One SSE line -> the JSON event, `DONE` for `data: [DONE]`, or None for blank lines and comments."""
    line = line.strip()
    if not line or line.startswith(":"):
        return None
    if not line.startswith("data:"):
        return None  # `event:` / `id:` lines: vLLM does not send them; ignore rather than fail
    payload = line[5:].strip()
    if payload == DONE:
        return DONE
    try:
        event = json.loads(payload)
    except ValueError:
        raise ProtocolError(f"malformed JSON in the event stream: {payload[:80]!r}") from None
    if not isinstance(event, dict):
        raise ProtocolError("an event of the stream is not a JSON object")
    return event


def parse_stream_chunk(event: dict[str, Any]) -> StreamChunk | None:
    """Classify a chunk. Errors sent in-stream (`{"error": ...}`) raise; a chunk without choices (the usage
    chunk of `stream_options.include_usage`) yields only its usage."""
    if "error" in event:
        err = event["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise ProtocolError(f"the server reported an error mid-stream: {message}")
    usage = event.get("usage") if isinstance(event.get("usage"), dict) else None
    choices = event.get("choices")
    if not isinstance(choices, list):
        raise ProtocolError("a stream chunk has no `choices` list")
    if not choices:
        return StreamChunk(modality="usage", usage=usage) if usage else None
    choice = choices[0]
    if not isinstance(choice, dict):
        raise ProtocolError("a stream choice is not an object")
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    modality = event.get("modality") or "text"
    finish = choice.get("finish_reason")
    if modality == "audio":
        if not isinstance(content, str) or not content:
            if finish is not None:
                return StreamChunk(modality="audio", finish_reason=finish, usage=usage)
            raise ProtocolError("an audio chunk carries no base64 WAV in delta.content")
        return StreamChunk(modality="audio", audio_b64=content, finish_reason=finish, usage=usage)
    if modality != "text":
        return None  # a modality this gateway does not use (e.g. image): skip it
    return StreamChunk(
        modality="text", text=content if isinstance(content, str) else "", finish_reason=finish, usage=usage
    )


@dataclass(frozen=True)
class ChatResult:
    text: str
    audio_b64: str | None
    usage: dict[str, Any] | None


def parse_chat_response(body: Any) -> ChatResult:
    """Non-streaming `chat.completion` (fact sheet §2 "Non-streaming response").

    vLLM-Omni 0.30.0 answers ONE choice carrying both `message.content` and `message.audio` (serving_chat.py
    `_merge_audio_choices`, #7376); older releases sent *separate choices that both have index 0*, in an
    order that changed across versions. So each part is picked by content, whichever choice holds it:
    `message.audio.data` (base64 WAV) and `message.content` (text).
    """
    if not isinstance(body, dict):
        raise ProtocolError("the chat completion is not a JSON object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ProtocolError("the chat completion has no choices")
    text_parts: list[str] = []
    audio: str | None = None
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise ProtocolError("a choice has no message")
        payload = message.get("audio")
        if isinstance(payload, dict) and isinstance(payload.get("data"), str) and payload["data"]:
            audio = audio or payload["data"]
        content = message.get("content")
        if isinstance(content, str) and content:
            text_parts.append(content)
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
    return ChatResult(text="".join(text_parts), audio_b64=audio, usage=usage)


@dataclass(frozen=True)
class WavChunk:
    pcm: bytes  # s16le mono
    sample_rate: int


def decode_wav_b64(b64: str) -> WavChunk:
    """A base64 WAV chunk -> PCM16 mono. Each streamed audio chunk is a self-contained WAV with its own
    header (fact sheet §2), PCM 16-bit; a chunk whose data is shorter than its header says is truncated."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("an audio chunk is not valid base64") from None
    return decode_wav(raw)


def decode_wav(raw: bytes) -> WavChunk:
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise ProtocolError("an audio chunk is not a WAV file")
    try:
        with wave.open(io.BytesIO(raw), "rb") as w:
            channels, width, rate, frames = (
                w.getnchannels(),
                w.getsampwidth(),
                w.getframerate(),
                w.getnframes(),
            )
            data = w.readframes(frames)
    except (wave.Error, EOFError) as exc:
        raise ProtocolError(f"an audio chunk is not a readable WAV: {exc}") from None
    if width != 2:
        raise ProtocolError(f"an audio chunk has {8 * width}-bit samples; expected 16-bit PCM")
    if len(data) < frames * channels * width:
        raise ProtocolError(
            f"a WAV audio chunk is truncated: {len(data)} of {frames * channels * width} bytes"
        )
    if channels != 1:
        mono = np.frombuffer(data, dtype="<i2").reshape(-1, channels).mean(axis=1)
        data = mono.astype("<i2").tobytes()
    return WavChunk(pcm=data, sample_rate=rate)


def models_response(ids: Sequence[str], owned_by: str = "vllm", created: int = 0) -> dict[str, Any]:
    """`GET /v1/models` (fact sheet §6): the OpenAI list; `id` is the served name, `root` the model path."""
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": created, "owned_by": owned_by, "root": i, "parent": None}
            for i in ids
        ],
    }
