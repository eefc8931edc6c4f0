"""vLLM-Omni's wire shapes: request builders and response parsers, pure functions without I/O.

Every shape is read from vLLM-Omni's own source (`vllm_omni/entrypoints/openai/serving_chat.py`,
`serving_speech.py`, `protocol/audio.py`; see docs/vllm-omni.md); the fact-sheet section is named where a
field is relied on. Parsers are strict about what they use and lenient about
everything else, because the server adds fields between releases.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
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


class ProtocolError(ValueError):
    """The backend's answer does not have the shape vLLM-Omni documents (maps to 502)."""


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

    `stream: true` + `response_format: "pcm"` streams raw PCM16 24 kHz mono. `speed` is never sent with
    `stream` (the server refuses it); the gateway changes tempo itself. The 0.6B Base model has no built-in
    voices: each request names an uploaded voice (`voice`) or carries `ref_audio` (a `data:` URL; raw base64
    is rejected) with `ref_text` (its exact transcript), and `task_type: "Base"`.
    """
    body: dict[str, Any] = {
        "input": text,
        "response_format": response_format,
        "stream": stream,
        "language": language,
    }
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

    Text and audio are *separate choices that both have index 0*, and their order changed across versions,
    so each is picked by content: `message.audio.data` (base64 WAV) and `message.content` (text).
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


def models_response(ids: Sequence[str], owned_by: str = "vllm-omni", created: int = 0) -> dict[str, Any]:
    """`GET /v1/models` (fact sheet §6): the OpenAI list; `id` is the served name, `root` the model path."""
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": created, "owned_by": owned_by, "root": i, "parent": None}
            for i in ids
        ],
    }
