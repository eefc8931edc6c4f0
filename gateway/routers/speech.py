"""Read-aloud over HTTP: POST /read and POST /voice/batch return the whole audio file."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from gateway.audio.encode import CONTENT_TYPES, encode
from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.engines.base import SynthesisRequest
from gateway.schemas import BatchRequest, ReadRequest
from gateway.services.speech import check_text, resolve, synthesize
from gateway.services.speech_output import timed_body, webvtt, word_timeline

router = APIRouter(tags=["read-aloud"])

_AUDIO_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {t: {} for t in CONTENT_TYPES.values()}, "description": "Audio file"}
}


async def _speak(
    body: ReadRequest | BatchRequest, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    text = check_text(body.text, settings.max_text_chars)
    synth = engines.synthesizer
    request = resolve(
        synth,
        SynthesisRequest(
            text=text,
            voice=body.voice,
            language=body.language,
            speed=body.speed,
            normalize=body.normalize,
            timings=body.output != "audio",
        ),
    )
    result = await synthesize(synth, request, metrics, settings.max_speech_seconds)
    if body.output == "json":
        return JSONResponse(await timed_body(result, body.response_format, text))
    if body.output == "vtt":
        return PlainTextResponse(webvtt(word_timeline(result.chunks)), media_type="text/vtt")
    audio = await asyncio.to_thread(encode, result.pcm, result.sample_rate, body.response_format)
    headers = {
        "X-Audio-Duration": f"{result.duration:.3f}",
        "X-Audio-Sample-Rate": str(result.sample_rate),
        "X-Generation-Seconds": f"{result.generation_s:.3f}",
    }
    return Response(audio, media_type=CONTENT_TYPES[body.response_format], headers=headers)


@router.post(
    "/read",
    response_class=Response,
    responses=_AUDIO_RESPONSE,
    summary="Read text aloud: WAV, 24 kHz, 16-bit, mono by default",
)
async def read(
    body: ReadRequest, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    return await _speak(body, engines, settings, metrics)


@router.post(
    "/voice/batch", response_class=Response, responses=_AUDIO_RESPONSE, summary="Batch TTS generation"
)
async def voice_batch(
    body: BatchRequest, engines: EnginesDep, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    return await _speak(body, engines, settings, metrics)
