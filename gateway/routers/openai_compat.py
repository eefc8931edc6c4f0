"""OpenAI-compatible routes over the same engines, so the `openai` SDK works with only a base URL change."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from gateway.audio.encode import CONTENT_TYPES, encode
from gateway.deps import EnginesDep, MetricsDep, SettingsDep
from gateway.engines.base import DecoderSegment, SynthesisRequest, Task, Transcription, TranscriptSegment
from gateway.engines.openai_names import OPENAI_ASR_MODELS, OPENAI_TTS_MODELS, is_asr_name, is_tts_name
from gateway.engines.registry import Engines
from gateway.errors import APIError
from gateway.routers.uploads import read_upload
from gateway.schemas import OpenAISpeechRequest
from gateway.services.speech import check_text, resolve, synthesize
from gateway.services.speech_output import audio_stream, timed_body, webvtt, word_timeline
from gateway.services.transcription import transcribe_detailed

router = APIRouter(prefix="/v1", tags=["openai"])

_CREATED = int(time.time())


def _ids(engines: Engines, role: str) -> set[str]:
    return {m.id for m in engines.models() if m.role == role}


_FAMILIES = {"asr": (is_asr_name, OPENAI_ASR_MODELS), "tts": (is_tts_name, OPENAI_TTS_MODELS)}
_PATTERNS = {"asr": "whisper* or *transcribe*", "tts": "tts* or *-tts*"}
_ROLE_NAMES = {"asr": "speech recognition", "tts": "speech synthesis"}


def _check_model(engines: Engines, model: str, role: str) -> None:
    """OpenAI's model names map onto the active engine: the served ids, and any name of the route's family
    (so a dated or newly shipped OpenAI name works). A name of the other family is a clear mismatch (400);
    anything else is unknown (404). Both errors list the names that exist."""
    in_family, aliases = _FAMILIES[role]
    served = _ids(engines, role)
    if model in served or model in aliases:
        return
    other = "tts" if role == "asr" else "asr"
    names = sorted(served | set(aliases))
    hint = f"{', '.join(names)}, or any name matching {_PATTERNS[role]}"
    if _FAMILIES[other][0](model) or model in _ids(engines, other):
        raise APIError(
            400,
            "model_role_mismatch",
            f"the model {model!r} is a {_ROLE_NAMES[other]} model; this route needs a "
            f"{_ROLE_NAMES[role]} model: {hint}",
            models=names,
        )
    if not in_family(model):
        raise APIError(
            404, "model_not_found", f"the model {model!r} does not exist; available: {hint}", models=names
        )


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
    _check_model(engines, body.model, "tts")
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


ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]


def _segment(i: int, s: TranscriptSegment) -> dict[str, object]:
    """Every field openai-python's TranscriptionSegment requires; an engine without decoder figures
    (e.g. Omni's one-segment answer) reports neutral values."""
    d = s if isinstance(s, DecoderSegment) else None
    return {
        "id": i,
        "seek": d.seek if d else 0,
        "start": s.start,
        "end": s.end,
        "text": s.text,
        "tokens": list(d.tokens) if d else [],
        "temperature": d.temperature if d else 0.0,
        "avg_logprob": d.avg_logprob if d else 0.0,
        "compression_ratio": d.compression_ratio if d else 0.0,
        "no_speech_prob": d.no_speech_prob if d else 0.0,
    }


def _render(result: Transcription, response_format: ResponseFormat, task: Task, words: bool) -> object:
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
        verbose: dict[str, object] = {
            "task": task,
            "language": result.language,
            "duration": result.duration,
            "text": result.text,
            "segments": [_segment(i, s) for i, s in enumerate(result.segments)],
            "usage": {"type": "duration", "seconds": result.duration},
        }
        if words:
            verbose["words"] = [
                {"word": w.word, "start": w.start, "end": w.end}
                for s in result.segments
                if isinstance(s, DecoderSegment)
                for w in s.words
            ]
        return verbose
    return {"text": result.text}


def _sse(data: dict[str, object]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _transcript_events(result: Transcription) -> AsyncIterator[bytes]:
    """OpenAI's transcription stream: `transcript.text.delta` events whose concatenation is the text, then
    `transcript.text.done` with the whole text. The deltas are the engine's segments, sent once the audio
    is transcribed: the engines transcribe a whole upload at once."""
    sent = ""
    for s in result.segments:
        if not s.text:
            continue
        delta = s.text if not sent else " " + s.text
        if not result.text.startswith(sent + delta):
            break  # an engine whose text is not its segments joined: the rest goes in one delta
        sent += delta
        yield _sse({"type": "transcript.text.delta", "delta": delta})
    if sent != result.text:
        yield _sse({"type": "transcript.text.delta", "delta": result.text[len(sent) :]})
    yield _sse({"type": "transcript.text.done", "text": result.text})


def _word_granularity(granularities: list[str] | None, response_format: ResponseFormat) -> bool:
    wanted = set(granularities or ())
    unknown = wanted - {"word", "segment"}
    if unknown:
        raise APIError(
            400,
            "invalid_timestamp_granularity",
            f"unknown timestamp_granularities {sorted(unknown)}; use word and/or segment",
        )
    if "word" in wanted and response_format != "verbose_json":
        raise APIError(
            400,
            "invalid_timestamp_granularity",
            "timestamp_granularities[]=word needs response_format=verbose_json",
        )
    return "word" in wanted


@router.post("/audio/transcriptions", summary="OpenAI audio.transcriptions.create", response_model=None)
async def transcriptions(
    engines: EnginesDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form(max_length=32)] = None,
    prompt: Annotated[str | None, Form(max_length=4096)] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    stream: Annotated[bool, Form()] = False,
    granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
) -> object:
    _check_model(engines, model, "asr")
    words = _word_granularity(granularities, response_format)
    if stream and response_format not in ("json", "text"):
        raise APIError(
            400, "stream_unsupported", "stream=true streams text events: use response_format json or text"
        )
    data = await read_upload(file, settings.max_upload_bytes)
    result = await transcribe_detailed(
        engines.transcriber,
        data,
        language,
        settings.max_upload_bytes,
        settings.max_audio_seconds,
        words=words,
    )
    if stream:
        headers = {"Cache-Control": "no-cache"}
        return StreamingResponse(_transcript_events(result), media_type="text/event-stream", headers=headers)
    return _render(result, response_format, "transcribe", words)


@router.post("/audio/translations", summary="OpenAI audio.translations.create", response_model=None)
async def translations(
    engines: EnginesDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form()],
    prompt: Annotated[str | None, Form(max_length=4096)] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
) -> object:
    """Speech in any language -> English text, where the engine's model can translate (Whisper's
    multilingual models); a 400 `translation_unsupported` before reading the audio where it cannot."""
    _check_model(engines, model, "asr")
    data = await read_upload(file, settings.max_upload_bytes)
    result = await transcribe_detailed(
        engines.transcriber,
        data,
        None,
        settings.max_upload_bytes,
        settings.max_audio_seconds,
        task="translate",
    )
    return _render(result, response_format, "translate", False)
