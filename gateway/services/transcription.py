"""Uploaded audio -> text: decode (off the loop), check limits, transcribe."""

from __future__ import annotations

import asyncio

from gateway.audio.decode import AudioDecodeError, AudioTooLongError, decode_audio
from gateway.engines.base import Transcriber, Transcription
from gateway.errors import APIError


async def transcribe_upload(
    transcriber: Transcriber, data: bytes, language: str | None, max_bytes: int, max_seconds: float
) -> Transcription:
    if len(data) > max_bytes:
        raise APIError(
            413,
            "file_too_large",
            f"the upload has {len(data)} bytes; the limit is {max_bytes}",
            limit=max_bytes,
        )
    transcriber.check_language(language)  # fail fast on an unsupported language, before decoding anything
    try:
        decoded = await asyncio.to_thread(decode_audio, data, transcriber.sample_rate, max_seconds)
    except AudioTooLongError as exc:
        raise APIError(413, "audio_too_long", str(exc), limit_seconds=exc.limit_s) from None
    except AudioDecodeError as exc:
        raise APIError(415, "invalid_audio", f"the upload is not audio: {exc}") from None
    return await transcriber.transcribe(decoded.samples, language)
