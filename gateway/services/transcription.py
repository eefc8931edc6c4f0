"""Uploaded audio -> text: decode (off the loop), check limits, transcribe."""

from __future__ import annotations

import asyncio

from gateway.audio.decode import AudioDecodeError, AudioTooLongError, DecodedAudio, decode_audio
from gateway.engines.base import (
    DetailedTranscriber,
    Task,
    Transcriber,
    Transcription,
)
from gateway.errors import APIError


async def decode_upload(
    transcriber: Transcriber, data: bytes, language: str | None, max_bytes: int, max_seconds: float
) -> DecodedAudio:
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
    return decoded


async def transcribe_upload(
    transcriber: Transcriber, data: bytes, language: str | None, max_bytes: int, max_seconds: float
) -> Transcription:
    decoded = await decode_upload(transcriber, data, language, max_bytes, max_seconds)
    return await transcriber.transcribe(decoded.samples, language)


async def transcribe_detailed(
    transcriber: Transcriber,
    data: bytes,
    language: str | None,
    max_bytes: int,
    max_seconds: float,
    *,
    words: bool = False,
    task: Task = "transcribe",
) -> Transcription:
    """`transcribe_upload` with word timings and/or translation into English: a clear 400 before decoding
    anything where the engine cannot do what is asked."""
    detailed = transcriber if isinstance(transcriber, DetailedTranscriber) else None
    if task == "translate" and (detailed is None or not detailed.can_translate):
        raise APIError(
            400,
            "translation_unsupported",
            "this gateway's speech recognition model cannot translate into English "
            "(it is English-only or has no translation task); use /v1/audio/transcriptions",
        )
    if words and (detailed is None or not detailed.can_time_words):
        raise APIError(
            400,
            "word_timestamps_unsupported",
            "this gateway's speech recognition engine has no word timestamps; "
            "ask for timestamp_granularities[]=segment",
        )
    decoded = await decode_upload(transcriber, data, language, max_bytes, max_seconds)
    if detailed is None:
        return await transcriber.transcribe(decoded.samples, language)
    return await detailed.transcribe_detailed(decoded.samples, language, words=words, task=task)
