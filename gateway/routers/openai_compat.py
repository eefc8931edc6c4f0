"""OpenAI-compatible routes over the same engines, so the `openai` SDK works with only a base URL change."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from gateway.audio.encode import CONTENT_TYPES, encode
from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.engines.base import SynthesisRequest
from gateway.engines.registry import Engines
from gateway.errors import APIError
from gateway.routers.uploads import read_upload
from gateway.schemas import OpenAISpeechRequest
from gateway.services.speech import check_text, resolve, synthesize
from gateway.services.speech_output import audio_stream, timed_body, webvtt, word_timeline
from gateway.services.transcription import transcribe_upload

router = APIRouter(prefix="/v1", tags=["openai"])

# OpenAI's model and voice names map onto the active engine, so SDK defaults work unchanged.
OPENAI_TTS_MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_ASR_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
_CREATED = int(time.time())


def _ids(engines: Engines, role: str) -> set[str]:
    return {m.id for m in engines.models() if m.role == role}


def _check_model(engines: Engines, model: str, role: str, aliases: tuple[str, ...]) -> None:
    if model not in aliases and model not in _ids(engines, role):
        known = ", ".join(sorted(_ids(engines, role) | set(aliases)))
        raise APIError(404, "model_not_found", f"the model {model!r} does not exist; available: {known}")


@router.get("/models", summary="OpenAI model list")
async def list_models(engines: EnginesDep) -> dict[str, object]:
    data = [
        {"id": m.id, "object": "model", "created": _CREATED, "owned_by": m.engine, "role": m.role}
        for m in engines.models()
    ]
    data += [
        {"id": a, "object": "model", "created": _CREATED, "owned_by": "alias", "role": "tts"}
        for a in OPENAI_TTS_MODELS
    ]
    data += [
        {"id": a, "object": "model", "created": _CREATED, "owned_by": "alias", "role": "asr"}
        for a in OPENAI_ASR_MODELS
    ]
    return {"object": "list", "data": data}


@router.post("/audio/speech", response_class=Response, summary="OpenAI audio.speech.create")
async def speech(
    body: OpenAISpeechRequest, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    _check_model(engines, body.model, "tts", OPENAI_TTS_MODELS)
    text = check_text(body.input, settings.max_text_chars)
    synth = engines.synthesizer
    request = resolve(
        synth,
        SynthesisRequest(
            text=text,
            voice=body.voice,  # OpenAI's names ("alloy", ...) resolve to the default voice
            language="auto",
            speed=body.speed,
            normalize=body.normalize,
            timings=body.output != "audio",
        ),
    )
    if body.stream_format == "sse":
        events = await audio_stream(
            synth, request, body.response_format, metrics, sse=True, max_seconds=settings.max_speech_seconds
        )
        headers = {"Cache-Control": "no-cache"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)
    if body.output == "audio" and body.stream:
        chunks = await audio_stream(
            synth, request, body.response_format, metrics, max_seconds=settings.max_speech_seconds
        )
        return StreamingResponse(chunks, media_type=CONTENT_TYPES[body.response_format])
    result = await synthesize(synth, request, metrics, settings.max_speech_seconds)
    if body.output == "json":
        return JSONResponse(await timed_body(result, body.response_format, text))
    if body.output == "vtt":
        return PlainTextResponse(webvtt(word_timeline(result.chunks)), media_type="text/vtt")
    audio = await asyncio.to_thread(encode, result.pcm, result.sample_rate, body.response_format)
    return Response(audio, media_type=CONTENT_TYPES[body.response_format])


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


@router.post("/audio/transcriptions", summary="OpenAI audio.transcriptions.create", response_model=None)
async def transcriptions(
    engines: EnginesDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form(max_length=32)] = None,
    prompt: Annotated[str | None, Form(max_length=4096)] = None,
    response_format: Annotated[Literal["json", "text", "verbose_json", "srt", "vtt"], Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
) -> dict[str, object] | Response:
    _check_model(engines, model, "asr", OPENAI_ASR_MODELS)
    data = await read_upload(file, settings.max_upload_bytes)
    result = await transcribe_upload(
        engines.transcriber, data, language, settings.max_upload_bytes, settings.max_audio_seconds
    )
    if response_format == "text":
        return PlainTextResponse(result.text)
    if response_format in ("srt", "vtt"):
        sep = "," if response_format == "srt" else "."
        blocks = []
        for i, s in enumerate(result.segments, 1):
            cue = f"{_timestamp(s.start, sep)} --> {_timestamp(s.end, sep)}\n{s.text}\n"
            blocks.append(f"{i}\n{cue}" if response_format == "srt" else cue)
        body = "\n".join(blocks)
        if response_format == "vtt":
            return PlainTextResponse("WEBVTT\n\n" + body, media_type="text/vtt")
        return PlainTextResponse(body, media_type="application/x-subrip")
    if response_format == "verbose_json":
        return {
            "task": "transcribe",
            "language": result.language,
            "duration": result.duration,
            "text": result.text,
            "segments": [
                {"id": i, "start": s.start, "end": s.end, "text": s.text}
                for i, s in enumerate(result.segments)
            ],
        }
    return {"text": result.text}
