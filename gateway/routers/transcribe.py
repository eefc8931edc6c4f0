"""POST /voice/transcribe: multipart upload -> text with segment times."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from gateway.deps import EnginesDep, SettingsDep
from gateway.routers.uploads import read_upload
from gateway.services.transcription import transcribe_upload

router = APIRouter(tags=["transcription"])


@router.post("/voice/transcribe", summary="Transcribe an audio file (WAV at any rate, MP3, OGG, FLAC, ...)")
async def transcribe(
    engines: EnginesDep,
    settings: SettingsDep,
    audio: Annotated[UploadFile, File(description="The audio file")],
    language: Annotated[str | None, Form(max_length=32)] = None,
) -> dict[str, object]:
    data = await read_upload(audio, settings.max_upload_bytes)
    result = await transcribe_upload(
        engines.transcriber, data, language, settings.max_upload_bytes, settings.max_audio_seconds
    )
    return {
        "text": result.text,
        "language": result.language,
        "duration": result.duration,
        "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in result.segments],
    }
