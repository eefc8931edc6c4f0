"""What the HTTP speech routes hand back besides a plain audio file: chunked audio streams in any format, a
JSON body with the audio and word timings, WebVTT captions. Routers stay thin; the work is here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from gateway.audio.encode import CONTENT_TYPES, encode
from gateway.audio.stream_encode import StreamEncoder
from gateway.engines.base import SynthesisChunk, SynthesisRequest, Synthesizer
from gateway.errors import APIError
from gateway.metrics import Metrics
from gateway.services.speech import SpeechTooLongError, SynthesisResult, stream_speech

STREAM_GAUGE_KIND = "speech_http"
ENCODE_SLICE_S = 0.25


def word_timeline(chunks: list[SynthesisChunk], offset: float = 0.0) -> list[dict[str, Any]]:
    """Word timings on the timeline of the whole audio (`offset`: where the first chunk starts), with offsets
    into the original text."""
    out: list[dict[str, Any]] = []
    for chunk in chunks:
        for w in chunk.words:
            item: dict[str, Any] = {
                "word": w.text,
                "start": round(offset + w.start, 3),
                "end": round(offset + w.end, 3),
                "char_start": w.text_start,
                "char_end": w.text_end,
            }
            if w.spoken:
                item["spoken"] = w.spoken
            out.append(item)
        offset += len(chunk.pcm) / 2 / chunk.sample_rate
    return out


def sentence_timeline(chunks: list[SynthesisChunk]) -> list[dict[str, Any]]:
    """One entry per sentence; the pieces an engine streamed a sentence in are one span of audio."""
    out: list[dict[str, Any]] = []
    offset = 0.0
    for chunk in chunks:
        duration = len(chunk.pcm) / 2 / chunk.sample_rate
        if out and out[-1]["index"] == chunk.index:
            out[-1]["end"] = round(offset + duration, 3)
        else:
            out.append(
                {
                    "index": chunk.index,
                    "start": round(offset, 3),
                    "end": round(offset + duration, 3),
                    "char_start": chunk.text_start,
                    "char_end": chunk.text_end,
                }
            )
        offset += duration
    return out


def _vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def webvtt(words: list[dict[str, Any]]) -> str:
    """One cue per written word; the cue id 'char_start-char_end' lets a player find the word in the text."""
    lines = ["WEBVTT", ""]
    for w in words:
        text = w["word"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        lines += [
            f"{w['char_start']}-{w['char_end']}",
            f"{_vtt_time(w['start'])} --> {_vtt_time(w['end'])}",
            text,
            "",
        ]
    return "\n".join(lines)


async def timed_body(result: SynthesisResult, fmt: str, text: str) -> dict[str, Any]:
    audio = await asyncio.to_thread(encode, result.pcm, result.sample_rate, fmt)
    return {
        "text": text,
        "format": fmt,
        "content_type": CONTENT_TYPES[fmt],
        "sample_rate": result.sample_rate,
        "duration": round(result.duration, 3),
        "audio": base64.b64encode(audio).decode("ascii"),
        "words": word_timeline(result.chunks),
        "sentences": sentence_timeline(result.chunks),
    }


async def audio_stream(
    synth: Synthesizer,
    request: SynthesisRequest,
    fmt: str,
    metrics: Metrics | None = None,
    sse: bool = False,
    max_seconds: float | None = None,
) -> AsyncIterator[bytes]:
    """Encoded audio as it is synthesized: raw bytes, or with `sse` OpenAI's server-sent events
    (`speech.audio.delta` with base64 audio, then `speech.audio.done`), plus a `speech.words` event before
    each sentence's audio when the request asked for timings. The first audio (a sentence, or the first piece
    of one from an engine that streams inside sentences) is synthesized before this returns, so an engine
    error (not ready, bad voice...) is a proper HTTP error, not a truncated 200.

    Past `max_seconds` of audio the stream ends cleanly at the last chunk within the cap (the file stays
    valid); with SSE an `error` event before `speech.audio.done` says why."""
    encoder = StreamEncoder(fmt, synth.sample_rate)
    chunks = stream_speech(synth, request, metrics, max_seconds)
    try:
        first = await anext(chunks, None)
    except BaseException:
        encoder.close()
        await chunks.aclose()
        raise
    if first is None:
        encoder.close()
        await chunks.aclose()
        raise APIError(400, "nothing_to_say", "the text holds nothing that can be spoken")
    pieces = _drive(encoder, chunks, first, metrics)
    return _as_sse(pieces) if sse else _audio_only(pieces)


# What `_drive` yields: (chunk, b"") when a chunk (a sentence or a piece of one) begins, (None, bytes) of
# encoded audio, and (APIError, b"") when the audio cap stopped the stream early.
Piece = tuple[SynthesisChunk | APIError | None, bytes]


async def _audio_only(pieces: AsyncGenerator[Piece, None]) -> AsyncGenerator[bytes, None]:
    async with contextlib.aclosing(pieces):
        async for chunk, data in pieces:
            if chunk is None:
                yield data


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _as_sse(pieces: AsyncGenerator[Piece, None]) -> AsyncGenerator[bytes, None]:
    offset = 0.0
    async with contextlib.aclosing(pieces):
        async for chunk, data in pieces:
            if chunk is None:
                yield _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")})
                continue
            if isinstance(chunk, APIError):
                yield _event({"type": "error", **chunk.body()})
                continue
            if chunk.words:
                yield _event({"type": "speech.words", "words": word_timeline([chunk], offset)})
            offset += len(chunk.pcm) / 2 / chunk.sample_rate
    # No tokens exist for this synthesis; the fields are there because clients read them.
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    yield _event({"type": "speech.audio.done", "usage": usage, "duration": round(offset, 3)})


async def _drive(
    encoder: StreamEncoder,
    chunks: AsyncGenerator[SynthesisChunk, None],
    first: SynthesisChunk,
    metrics: Metrics | None,
) -> AsyncGenerator[Piece, None]:
    """(chunk, b"") when a chunk begins, then (None, encoded bytes) as they come."""
    gauge = metrics.active_streams.labels(kind=STREAM_GAUGE_KIND) if metrics is not None else None
    if gauge is not None:
        gauge.inc()
    try:
        stopped: APIError | None = None
        async with contextlib.aclosing(chunks):
            chunk: SynthesisChunk | None = first
            step = int(ENCODE_SLICE_S * first.sample_rate) * 2  # bytes, whole samples
            while chunk is not None:
                yield chunk, b""
                # A chunk is encoded in slices so its first bytes leave before the whole of it is encoded:
                # time to first audio stays that of pcm.
                for i in range(0, len(chunk.pcm), step):
                    data = await asyncio.to_thread(encoder.write, chunk.pcm[i : i + step])
                    if data:
                        yield None, data
                try:
                    chunk = await anext(chunks, None)
                except SpeechTooLongError as exc:
                    stopped = exc  # the audio cap: what was sent so far ends as a whole file
                    chunk = None
        tail = await asyncio.to_thread(encoder.finish)
        if tail:
            yield None, tail
        if stopped is not None:
            yield stopped, b""
    finally:
        # A client that hangs up ends here too (the response closes this generator): synthesis stops.
        encoder.close()
        if gauge is not None:
            gauge.dec()
