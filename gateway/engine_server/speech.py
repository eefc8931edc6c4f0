"""`/v1/audio/speech` and `/v1/audio/voices` as vLLM-Omni 0.30.0 answers them (fact sheet §3).

The voice itself is Piper's (a CPU engine cannot clone): the cloning fields are accepted and validated the
way vLLM-Omni 0.30.0 does (serving_speech.py `create_speech`, tts_adapters/qwen3_tts.py `validate`), with
its messages, so a client that passes here passes there. The model behaves like a Qwen3-TTS checkpoint with
one built-in speaker (`joe`, also its default speaker) that also accepts Base (cloning) requests.

What the real server answered and this one repeats: `stream: true` alone streams server-sent events
(`speech.audio.delta` with base64 PCM16, then `speech.audio.done` with usage); raw PCM/WAV bytes only with
`stream_format: "audio"`; `speed` with either is a 400; non-streaming audio carries `x-vllm-omni-*` token
headers; a second upload of a voice name overwrites the first (200); the voices listing always carries the
placeholder "default".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import re
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from gateway.audio.decode import AudioDecodeError, decode_audio
from gateway.audio.encode import CONTENT_TYPES, encode
from gateway.engine_server.errors import VllmError
from gateway.engine_server.models import SAMPLE_RATE, EngineSet
from gateway.engines.base import SynthesisRequest
from gateway.engines.vllm_omni import protocol

router = APIRouter()

# Fact sheet §3: `language` is "Auto" or one of the codec languages.
QWEN_TTS_LANGUAGES = {"Auto", *protocol.QWEN_TTS_LANGUAGES}
SPOKEN_LANGUAGES = ("English",)  # Piper's bundled voice; the others are valid names this server refuses
BUILTIN_VOICE = "joe"
MAX_UPLOAD = 10 * 1024 * 1024
# Streamed PCM arrives per code2wav window: the first `initial_codec_chunk_frames` (1 frame) then 25 frames;
# a codec frame is 1920 samples at 24 kHz (12.5 frames/s). The real server's SSE deltas: 3840 bytes, then
# 96000, then the rest.
FRAME_SAMPLES = 1920
CODEC_FRAMES_PER_S = SAMPLE_RATE / FRAME_SAMPLES
_ALLOWED_MIME = {
    "audio/mpeg",
    "audio/wav",
    "audio/x-wav",
    "audio/ogg",
    "audio/aac",
    "audio/flac",
    "audio/webm",
    "audio/mp4",
}
_SPEED_REFUSED = (
    "{} is not supported with speed adjustment. Use a non-streaming request or remove the speed parameter."
)


class SpeechRequest(BaseModel):
    """`OpenAICreateSpeechRequest` fields (vLLM-Omni 0.30.0 protocol/audio.py)."""

    model_config = ConfigDict(extra="ignore")

    input: str
    model: str | None = None
    voice: str | None = Field(None, validation_alias=AliasChoices("voice", "speaker"))
    response_format: Literal["wav", "pcm", "flac", "mp3", "opus"] = "wav"
    speed: float | None = Field(1.0, ge=0.25, le=4.0)
    stream: bool = False
    stream_format: Literal["sse", "audio"] | None = None
    task_type: Literal["CustomVoice", "VoiceDesign", "Base"] | None = None
    language: str | None = None
    instructions: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    x_vector_only_mode: bool | None = None
    speaker_embedding: list[float] | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    initial_codec_chunk_frames: int | None = Field(None, ge=0, le=100)

    def raw_stream(self) -> bool:
        return self.stream_format == "audio"

    def sse_stream(self) -> bool:
        return (self.stream or self.stream_format == "sse") and not self.raw_stream()

    @model_validator(mode="after")
    def _streaming_formats(self) -> SpeechRequest:
        if (self.raw_stream() or self.sse_stream()) and self.response_format not in ("pcm", "wav"):
            raise ValueError(
                "Streaming (stream=true, stream_format='audio', or stream_format='sse') requires "
                f"response_format='pcm' or 'wav'. Got response_format='{self.response_format}'."
            )
        return self


@dataclass
class UploadedVoice:
    name: str  # as uploaded; looked up lower-cased
    consent: str
    created_at: int
    file_size: int
    mime_type: str
    embedding_source: str  # "audio" | "direct"
    embedding_dim: int | None
    ref_text: str | None
    speaker_description: str | None
    audio_s: float = 0.0

    def listed(self) -> dict[str, Any]:
        """An entry of `uploaded_voices` in `GET /v1/audio/voices` (vLLM-Omni 0.30.0 api_server.py)."""
        out: dict[str, Any] = {
            "name": self.name,
            "consent": self.consent,
            "created_at": self.created_at,
            "file_size": self.file_size,
            "mime_type": self.mime_type,
            "embedding_source": self.embedding_source,
            "embedding_dim": self.embedding_dim,
        }
        if self.ref_text:
            out["ref_text"] = self.ref_text
        if self.speaker_description:
            out["speaker_description"] = self.speaker_description
        return out

    def uploaded(self) -> dict[str, Any]:
        """The `voice` object of the upload answer: fewer fields than the listing."""
        if self.embedding_source == "direct":
            keys = ("name", "consent", "created_at", "embedding_source", "embedding_dim")
        else:
            keys = ("name", "consent", "created_at", "mime_type", "file_size")
        out = {k: getattr(self, k) for k in keys}
        if self.ref_text:
            out["ref_text"] = self.ref_text
        if self.speaker_description:
            out["speaker_description"] = self.speaker_description
        return out


def _engines(request: Request) -> EngineSet:
    return request.app.state.engine_set


def _voices(request: Request) -> dict[str, UploadedVoice]:
    return request.app.state.uploaded_voices


def _upload_clock(request: Request) -> int:
    """Upload timestamps strictly increase, as vLLM-Omni's `_next_upload_timestamp` makes them."""
    now = max(int(time.time()), getattr(request.app.state, "last_upload_at", 0) + 1)
    request.app.state.last_upload_at = now
    return now


def check_ref_audio(ref_audio: str) -> float:
    """`ref_audio` must be a URL, a `data:` URL or a `file://` URI, lasting 1-30 s; returns its duration."""
    if not ref_audio.startswith(("http://", "https://", "data:", "file://")):
        raise VllmError(
            400, "ref_audio must be a URL (http/https), base64 data URL (data:...), or file URI (file://...)"
        )
    if not ref_audio.startswith("data:"):
        raise VllmError(400, "this server cannot fetch media: send ref_audio as a data: URL")
    head, _, payload = ref_audio.partition(",")
    if ";base64" not in head:
        raise VllmError(400, "ref_audio data URL must be base64-encoded")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise VllmError(400, "ref_audio is not valid base64") from None
    return check_clip(raw)


def check_clip(raw: bytes) -> float:
    """Decodable and 1-30 s long, with vLLM-Omni 0.30.0's messages (`_finalize_fetched_ref_audio`)."""
    try:
        duration = decode_audio(raw, 16000, 31).duration
    except AudioDecodeError as exc:
        raise VllmError(400, f"Could not decode audio file: {exc}") from None
    except ValueError:
        duration = 31.0
    if duration < 1.0:
        raise VllmError(
            400, f"Reference audio too short ({duration:.1f}s). At least 1s of clear speech is required."
        )
    if duration > 30.0:
        raise VllmError(
            400, f"Reference audio too long ({duration:.1f}s). Maximum 30s supported — use a shorter clip."
        )
    return duration


def validate(req: SpeechRequest, uploaded: dict[str, UploadedVoice]) -> float:
    """vLLM-Omni 0.30.0 Qwen3-TTS `validate`, in its order and with its messages (param null); returns the
    reference audio's length in seconds (0 without one)."""
    voice = req.voice.lower() if req.voice is not None else None
    held = uploaded.get(voice) if voice is not None else None
    stored = held is not None
    task_type = req.task_type
    if task_type is None and (req.ref_audio is not None or req.ref_text is not None):
        task_type = "Base"
    if stored:
        task_type = "Base"  # an uploaded voice is always a cloning request
    task_type = task_type or "CustomVoice"
    if not req.input or not req.input.strip():
        raise VllmError(400, "Input text cannot be empty")
    if req.language is not None:
        language = req.language.title()
        if language not in QWEN_TTS_LANGUAGES:
            raise VllmError(
                400, f"Invalid language '{language}'. Supported: {', '.join(sorted(QWEN_TTS_LANGUAGES))}"
            )
        if language not in ("Auto", *SPOKEN_LANGUAGES):
            raise VllmError(400, f"This server speaks {', '.join(SPOKEN_LANGUAGES)} only")
    available = {BUILTIN_VOICE, *uploaded}
    if task_type == "CustomVoice" and voice is not None and voice not in available:
        raise VllmError(400, f"Invalid voice '{voice}'. Supported: {', '.join(sorted(available))}")
    if req.speaker_embedding is not None:
        if task_type != "Base":
            raise VllmError(400, "'speaker_embedding' is only valid for Base task")
        if len(req.speaker_embedding) != 1024:
            raise VllmError(400, "speaker_embedding must have 1024 dimensions for this model")
    ref_s = 0.0
    if task_type == "Base":
        if voice is None and req.ref_audio is None and req.speaker_embedding is None:
            raise VllmError(400, "Base task requires 'ref_audio' or 'speaker_embedding' for voice cloning")
        if voice is not None and not stored and req.ref_audio is None:
            raise VllmError(
                400, f"Base task with built-in speaker '{voice}' requires 'ref_audio' for voice cloning"
            )
        if held is not None:
            ref_s = held.audio_s
        else:
            if req.ref_audio is not None:
                ref_s = check_ref_audio(req.ref_audio)
            x_vector_only = bool(req.x_vector_only_mode) or req.speaker_embedding is not None
            if not x_vector_only and not (req.ref_text or "").strip():
                raise VllmError(
                    400,
                    "Base task requires non-empty 'ref_text' (transcript of the reference audio) unless "
                    "'x_vector_only_mode' is enabled",
                )
    else:
        if req.ref_text is not None:
            raise VllmError(400, "'ref_text' is only valid for Base task")
        if req.x_vector_only_mode is not None:
            raise VllmError(400, "'x_vector_only_mode' is only valid for Base task")
    if task_type == "VoiceDesign" and not req.instructions:
        raise VllmError(400, "VoiceDesign task requires 'instructions' to describe the voice")
    if req.instructions and len(req.instructions) > 500:
        raise VllmError(400, "Instructions too long (max 500 characters)")
    if req.max_new_tokens is not None and req.max_new_tokens > 4096:
        raise VllmError(400, "max_new_tokens cannot exceed 4096")
    return ref_s


def usage(text: str, ref_s: float, pcm_bytes: int) -> dict[str, Any]:
    """`speech.audio.done` usage / the `x-vllm-omni-*` headers. Text tokens are counted as words and
    punctuation (the CPU engine has no tokenizer); audio tokens are codec frames (12.5 per second)."""
    text_tokens = len(re.findall(r"\w+|[^\w\s]", text))
    audio_tokens = math.ceil(ref_s * CODEC_FRAMES_PER_S)
    output = math.ceil(pcm_bytes / 2 / FRAME_SAMPLES)
    return {
        "input_tokens": text_tokens + audio_tokens,
        "output_tokens": output,
        "total_tokens": text_tokens + audio_tokens + output,
        "input_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
    }


def usage_headers(u: dict[str, Any]) -> dict[str, str]:
    return {
        "x-vllm-omni-input-tokens": str(u["input_tokens"]),
        "x-vllm-omni-output-tokens": str(u["output_tokens"]),
        "x-vllm-omni-total-tokens": str(u["total_tokens"]),
        "x-vllm-omni-input-text-tokens": str(u["input_token_details"]["text_tokens"]),
        "x-vllm-omni-input-audio-tokens": str(u["input_token_details"]["audio_tokens"]),
    }


def streaming_wav_header(rate: int) -> bytes:
    """The 44-byte header vLLM-Omni sends first for streamed `wav`: size fields are 0xFFFFFFFF."""
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


async def _sentences(engines: EngineSet, text: str, speed: float) -> AsyncIterator[bytes]:
    assert engines.tts is not None
    request = SynthesisRequest(text=text, voice="default", language="en", speed=speed)
    gen = engines.tts.stream(request)
    try:
        async for chunk in gen:
            yield chunk.pcm
    finally:
        await gen.aclose()


def _sse(kind: str, payload: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **payload}, separators=(',', ':'))}\n\n"


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, request: Request) -> Response:
    engines = _engines(request)
    uploaded = _voices(request)
    if body.voice is not None and body.voice.lower() == protocol.DEFAULT_VOICE_PLACEHOLDER:
        body.voice = None  # the placeholder of the listing: the model's default speaker
    if body.model is not None and body.model != engines.tts_name:
        raise VllmError(404, f"The model `{body.model}` does not exist.", "model", "NotFoundError")
    raw, sse = body.raw_stream(), body.sse_stream()
    if (raw or sse) and body.speed is not None and body.speed != 1.0:
        raise VllmError(400, _SPEED_REFUSED.format("Streaming" if raw else "SSE streaming"))
    ref_s = validate(body, uploaded)
    metrics = request.app.state.server_metrics
    t0 = time.perf_counter()
    if raw or sse:
        first_frames = body.initial_codec_chunk_frames or 1

        async def windows() -> AsyncIterator[bytes]:
            size = first_frames * FRAME_SAMPLES * 2
            buffer = b""
            first = True
            async for pcm in _sentences(engines, body.input, 1.0):
                buffer += pcm
                while len(buffer) >= size:
                    if first:
                        metrics.ttfp.labels(stage="tts").observe(time.perf_counter() - t0)
                        first = False
                    yield buffer[:size]
                    buffer = buffer[size:]
                    size = 25 * FRAME_SAMPLES * 2
            if buffer:
                yield buffer

        async def raw_body() -> AsyncIterator[bytes]:
            with metrics.running("tts"):
                if body.response_format == "wav":
                    yield streaming_wav_header(SAMPLE_RATE)
                async for window in windows():
                    yield window
                metrics.finished("tts", time.perf_counter() - t0)

        async def sse_body() -> AsyncIterator[str]:
            total = 0
            with metrics.running("tts"):
                try:
                    async for window in windows():
                        total += len(window)
                        audio = base64.b64encode(window).decode("ascii")
                        yield _sse(
                            "speech.audio.delta", {"audio": audio, "response_format": body.response_format}
                        )
                except Exception as exc:  # as vLLM-Omni: the failure becomes the stream's last event
                    error = {"message": str(exc), "type": "server_error", "param": None, "code": 500}
                    if total:
                        error.update(partial_audio=True, action="discard")
                    yield _sse("speech.audio.error", {"error": error})
                    return
                yield _sse("speech.audio.done", {"usage": usage(body.input, ref_s, total)})
                metrics.finished("tts", time.perf_counter() - t0)

        if sse:
            return StreamingResponse(sse_body(), media_type="text/event-stream; charset=utf-8")
        media = "audio/pcm" if body.response_format == "pcm" else "audio/wav"
        return StreamingResponse(raw_body(), media_type=media)
    with metrics.running("tts"):
        pcm = b"".join([p async for p in _sentences(engines, body.input, body.speed or 1.0)])
        audio = await asyncio.to_thread(encode, pcm, SAMPLE_RATE, body.response_format)
    metrics.finished("tts", time.perf_counter() - t0)
    headers = usage_headers(usage(body.input, ref_s, len(pcm)))
    return Response(audio, media_type=CONTENT_TYPES[body.response_format], headers=headers)


@router.get("/v1/audio/voices")
async def list_voices(request: Request) -> dict[str, Any]:
    """`{"voices": sorted(speakers | uploaded | {"default"}), "uploaded_voices": [...]}` as vLLM-Omni
    0.30.0 lists them, plus `languages` (ours: what Piper speaks; vLLM-Omni does not send it)."""
    uploaded = _voices(request)
    return {
        "voices": sorted({BUILTIN_VOICE, protocol.DEFAULT_VOICE_PLACEHOLDER, *uploaded}),
        "uploaded_voices": [v.listed() for v in uploaded.values()],
        "languages": list(SPOKEN_LANGUAGES),
    }


def _voice_name(name: str) -> str:
    trimmed = name.strip()
    if not trimmed or trimmed in (".", "..") or any(c in trimmed for c in "/\\\x00"):
        raise VllmError(400, f"Invalid voice name {name!r}: must be non-empty, no path separators or NUL")
    if trimmed.lower() == BUILTIN_VOICE:
        raise VllmError(
            400,
            f"Voice name '{trimmed}' is reserved by a built-in speaker of this model; "
            "choose a different name.",
        )
    return trimmed


@router.post("/v1/audio/voices")
async def upload_voice(
    request: Request,
    name: Annotated[str, Form()],
    consent: Annotated[str, Form()],
    audio_sample: Annotated[UploadFile | None, File()] = None,
    speaker_embedding: Annotated[str | None, Form()] = None,
    ref_text: Annotated[str | None, Form()] = None,
    speaker_description: Annotated[str | None, Form()] = None,
) -> JSONResponse:
    """Multipart upload: `audio_sample` (<= 10 MB, 1-30 s) or `speaker_embedding` (a JSON list), `consent`,
    `name`, optional `ref_text` and `speaker_description`. A name that exists is overwritten (200), as
    vLLM-Omni 0.30.0 does under its default registration policy."""
    if audio_sample is not None and speaker_embedding is not None:
        raise VllmError(400, "'audio_sample' and 'speaker_embedding' are mutually exclusive")
    if audio_sample is None and speaker_embedding is None:
        raise VllmError(400, "Either 'audio_sample' or 'speaker_embedding' must be provided")
    voices = _voices(request)
    display = _voice_name(name)
    ref_text = (ref_text or "").strip() or None
    speaker_description = (speaker_description or "").strip() or None
    if audio_sample is not None:
        raw = await audio_sample.read(MAX_UPLOAD + 1)
        if len(raw) > MAX_UPLOAD:
            raise VllmError(400, f"File size exceeds maximum limit of 10MB. Got {len(raw)} bytes.")
        mime = audio_sample.content_type or "audio/wav"
        if mime == "application/octet-stream":
            mime = "audio/wav"
        if mime not in _ALLOWED_MIME:
            raise VllmError(400, f"Unsupported MIME type: {mime}. Allowed: {sorted(_ALLOWED_MIME)}")
        duration = await asyncio.to_thread(check_clip, raw)
        voice = UploadedVoice(
            display,
            consent,
            _upload_clock(request),
            len(raw),
            mime,
            "audio",
            None,
            ref_text,
            speaker_description,
            duration,
        )
    else:
        try:
            vector = json.loads(speaker_embedding or "")
        except ValueError as exc:
            raise VllmError(400, f"'speaker_embedding' must be valid JSON: {exc}") from None
        if not isinstance(vector, list) or not vector:
            raise VllmError(400, "'speaker_embedding' must be a non-empty list of numbers")
        if not all(isinstance(x, int | float) for x in vector):
            raise VllmError(400, "'speaker_embedding' must contain only numeric values")
        if len(vector) != 1024:
            raise VllmError(400, "speaker_embedding must have 1024 dimensions for this model")
        voice = UploadedVoice(
            display,
            consent,
            _upload_clock(request),
            len(speaker_embedding or ""),
            "application/x-safetensors",
            "direct",
            len(vector),
            None,
            None,
        )
    voices[display.lower()] = voice  # a second upload of a name replaces the first
    return JSONResponse({"success": True, "voice": voice.uploaded()})


@router.delete("/v1/audio/voices/{name}")
async def delete_voice(name: str, request: Request) -> dict[str, Any]:
    if _voices(request).pop(name.lower(), None) is None:
        raise VllmError(404, f"Voice '{name}' not found", err_type="NotFoundError")
    return {"success": True, "message": f"Voice '{name}' deleted successfully"}
