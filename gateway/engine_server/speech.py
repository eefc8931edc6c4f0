"""`/v1/audio/speech` and `/v1/audio/voices` with Qwen3-TTS's fields and validation (fact sheet §3).

The voice itself is Piper's (a CPU engine cannot clone): the cloning fields are accepted and validated
exactly as vLLM-Omni's `_validate_qwen_tts_request` does, so a client that passes here passes there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

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
# a codec frame is 1920 samples at 24 kHz (12.5 frames/s). Fact sheet §3 "Streaming HTTP".
FRAME_SAMPLES = 1920


class SpeechRequest(BaseModel):
    """`OpenAICreateSpeechRequest` fields (fact sheet §3 "Request fields")."""

    model_config = ConfigDict(extra="ignore")

    input: str
    model: str | None = None
    voice: str | None = Field(None, validation_alias="voice")
    speaker: str | None = None
    response_format: Literal["wav", "pcm", "flac", "mp3", "aac", "opus"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream: bool = False
    stream_format: Literal["audio"] | None = None
    task_type: Literal["CustomVoice", "VoiceDesign", "Base"] | None = None
    language: str | None = None
    instructions: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    x_vector_only_mode: bool | None = None
    speaker_embedding: list[float] | None = None
    max_new_tokens: int | None = None
    seed: int | None = None
    initial_codec_chunk_frames: int | None = Field(None, ge=1, le=100)


@dataclass
class UploadedVoice:
    name: str
    consent: str
    created_at: int
    file_size: int
    mime_type: str
    embedding_source: str
    ref_text: str | None
    speaker_description: str | None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "consent": self.consent,
            "created_at": self.created_at,
            "file_size": self.file_size,
            "mime_type": self.mime_type,
            "embedding_source": self.embedding_source,
            "embedding_dim": 1024,
        }
        if self.ref_text:
            out["ref_text"] = self.ref_text
        if self.speaker_description:
            out["speaker_description"] = self.speaker_description
        return out


def _engines(request: Request) -> EngineSet:
    return request.app.state.engine_set


def _voices(request: Request) -> dict[str, UploadedVoice]:
    return request.app.state.uploaded_voices


def check_ref_audio(ref_audio: str) -> None:
    """`ref_audio` must be a URL, a `data:` URL or a `file://` URI, lasting 1-30 s (fact sheet §3)."""
    if not ref_audio.startswith(("http://", "https://", "data:", "file://")):
        raise VllmError(
            400,
            "ref_audio must be a URL (http/https), base64 data URL (data:...), or file URI (file://...)",
            "ref_audio",
        )
    if not ref_audio.startswith("data:"):
        raise VllmError(400, "this server cannot fetch media: send ref_audio as a data: URL", "ref_audio")
    head, _, payload = ref_audio.partition(",")
    if ";base64" not in head:
        raise VllmError(400, "ref_audio data URL must be base64-encoded", "ref_audio")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise VllmError(400, "ref_audio is not valid base64", "ref_audio") from None
    check_clip(raw, "ref_audio")


def check_clip(raw: bytes, param: str) -> float:
    try:
        duration = decode_audio(raw, 16000, 31).duration
    except AudioDecodeError as exc:
        raise VllmError(400, f"{param} is not decodable audio: {exc}", param) from None
    except ValueError:
        duration = 31.0
    if not 1.0 <= duration <= 30.0:
        raise VllmError(400, f"{param} must last 1-30 s; it lasts {duration:.1f} s", param)
    return duration


def validate(req: SpeechRequest, engines: EngineSet, uploaded: dict[str, UploadedVoice]) -> str:
    """vLLM-Omni's `_validate_qwen_tts_request` rules; returns the (lowercased) voice to speak with."""
    if req.model is not None and req.model != engines.tts_name:
        raise VllmError(404, f"The model `{req.model}` does not exist.", "model")
    if not req.input or not req.input.strip():
        raise VllmError(400, "Input text cannot be empty", "input")
    if req.stream and abs(req.speed - 1.0) > 1e-6:
        raise VllmError(400, "speed is not supported with stream=true", "speed")
    voice = (req.voice or req.speaker or "").lower() or None
    task_type = req.task_type
    if task_type is None and (req.ref_audio is not None or req.ref_text is not None):
        task_type = "Base"
    task_type = task_type or "CustomVoice"
    language = req.language or "Auto"
    if language not in QWEN_TTS_LANGUAGES:
        raise VllmError(
            400,
            f"Invalid language '{language}'. Supported: {', '.join(sorted(QWEN_TTS_LANGUAGES))}",
            "language",
        )
    if language not in ("Auto", *SPOKEN_LANGUAGES):
        raise VllmError(400, f"This server speaks {', '.join(SPOKEN_LANGUAGES)} only", "language")
    supported = {BUILTIN_VOICE, *uploaded}
    if task_type == "CustomVoice" and voice is not None and voice not in supported:
        raise VllmError(400, f"Invalid speaker '{voice}'. Supported: {', '.join(sorted(supported))}", "voice")
    if task_type == "Base":
        if voice is None:
            if req.speaker_embedding is None:
                if req.ref_audio is None:
                    raise VllmError(400, "Base task requires 'ref_audio' for voice cloning", "ref_audio")
                check_ref_audio(req.ref_audio)
                if not req.x_vector_only_mode and not (req.ref_text or "").strip():
                    raise VllmError(
                        400,
                        "Base task requires non-empty 'ref_text' (transcript of the reference "
                        "audio) unless 'x_vector_only_mode' is enabled",
                        "ref_text",
                    )
        elif voice not in uploaded:
            if req.ref_audio is None:
                raise VllmError(
                    400,
                    f"Base task with built-in speaker '{voice}' requires 'ref_audio' for voice cloning",
                    "ref_audio",
                )
            check_ref_audio(req.ref_audio)
    else:
        if req.ref_text is not None:
            raise VllmError(400, "'ref_text' is only valid for Base task", "ref_text")
        if req.x_vector_only_mode is not None:
            raise VllmError(400, "'x_vector_only_mode' is only valid for Base task", "x_vector_only_mode")
    if task_type == "VoiceDesign" and not req.instructions:
        raise VllmError(400, "VoiceDesign task requires 'instructions' to describe the voice", "instructions")
    if req.instructions and len(req.instructions) > 500:
        raise VllmError(400, "Instructions too long (max 500 characters)", "instructions")
    if req.speaker_embedding is not None and len(req.speaker_embedding) != 1024:
        raise VllmError(
            400, "speaker_embedding must have 1024 dimensions for this model", "speaker_embedding"
        )
    if req.max_new_tokens is not None and not 1 <= req.max_new_tokens <= 4096:
        raise VllmError(400, "max_new_tokens must be between 1 and 4096", "max_new_tokens")
    return voice or BUILTIN_VOICE


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
        await gen.aclose()  # type: ignore[attr-defined]


@router.post("/v1/audio/speech")
async def create_speech(body: SpeechRequest, request: Request) -> Response:
    engines = _engines(request)
    validate(body, engines, _voices(request))
    metrics = request.app.state.server_metrics
    t0 = time.perf_counter()
    if body.stream:
        if body.response_format not in ("pcm", "wav"):
            raise VllmError(400, "stream=true supports response_format 'pcm' or 'wav'", "response_format")
        first_frames = body.initial_codec_chunk_frames or 1

        async def windows() -> AsyncIterator[bytes]:
            if body.response_format == "wav":
                yield streaming_wav_header(SAMPLE_RATE)
            size = first_frames * FRAME_SAMPLES * 2
            buffer = b""
            first = True
            with metrics.running("tts"):
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
                metrics.finished("tts", time.perf_counter() - t0)

        media = "audio/pcm" if body.response_format == "pcm" else "audio/wav"
        return StreamingResponse(windows(), media_type=media)
    with metrics.running("tts"):
        pcm = b"".join([p async for p in _sentences(engines, body.input, body.speed)])
        audio = await asyncio.to_thread(encode, pcm, SAMPLE_RATE, body.response_format)
    metrics.finished("tts", time.perf_counter() - t0)
    return Response(audio, media_type=CONTENT_TYPES[body.response_format])


@router.get("/v1/audio/voices")
async def list_voices(request: Request) -> dict[str, Any]:
    """`{"voices": [...built-in], "uploaded_voices": [...]}` plus `languages` (ours: what Piper speaks)."""
    return {
        "voices": [BUILTIN_VOICE],
        "uploaded_voices": [v.public() for v in _voices(request).values()],
        "languages": list(SPOKEN_LANGUAGES),
    }


@router.post("/v1/audio/voices")
async def upload_voice(
    request: Request,
    name: Annotated[str, Form(min_length=1, max_length=64)],
    consent: Annotated[str, Form(min_length=1, max_length=256)],
    audio_sample: Annotated[UploadFile | None, File()] = None,
    speaker_embedding: Annotated[str | None, Form()] = None,
    ref_text: Annotated[str | None, Form(max_length=4096)] = None,
    speaker_description: Annotated[str | None, Form(max_length=1024)] = None,
) -> JSONResponse:
    """Multipart upload: `audio_sample` (<= 10 MB, 1-30 s) or `speaker_embedding` (a JSON list), `consent`,
    `name`, optional `ref_text` and `speaker_description` (fact sheet §3 "Uploading a voice")."""
    voices = _voices(request)
    key = name.strip().lower()
    if key in voices or key == BUILTIN_VOICE:
        raise VllmError(400, f"Voice '{name}' already exists", "name")
    if (audio_sample is None) == (speaker_embedding is None):
        raise VllmError(400, "send exactly one of 'audio_sample' or 'speaker_embedding'", "audio_sample")
    if audio_sample is not None:
        raw = await audio_sample.read(MAX_UPLOAD + 1)
        if len(raw) > MAX_UPLOAD:
            raise VllmError(413, "audio_sample is larger than 10 MB", "audio_sample")
        await asyncio.to_thread(check_clip, raw, "audio_sample")
        mime = audio_sample.content_type or "audio/wav"
        if not mime.startswith("audio/"):
            raise VllmError(400, f"Unsupported MIME type: {mime}", "audio_sample")
        size, source = len(raw), "audio"
    else:
        try:
            vector = json.loads(speaker_embedding or "")
        except ValueError:
            raise VllmError(
                400, "speaker_embedding must be a JSON list of numbers", "speaker_embedding"
            ) from None
        if (
            not isinstance(vector, list)
            or len(vector) != 1024
            or not all(isinstance(x, int | float) for x in vector)
        ):
            raise VllmError(400, "speaker_embedding must be a list of 1024 numbers", "speaker_embedding")
        mime, size, source = "application/json", len(speaker_embedding or ""), "embedding"
    voice = UploadedVoice(key, consent, int(time.time()), size, mime, source, ref_text, speaker_description)
    voices[key] = voice
    return JSONResponse({"success": True, "voice": voice.public()})


@router.delete("/v1/audio/voices/{name}")
async def delete_voice(name: str, request: Request) -> dict[str, Any]:
    voices = _voices(request)
    if voices.pop(name.lower(), None) is None:
        raise VllmError(404, f"Voice '{name}' not found", "name")
    return {"success": True, "message": f"Voice '{name}' deleted successfully"}
