"""Whole-text synthesis on any Synthesizer, with validation and metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace

from gateway.engines.base import SynthesisChunk, SynthesisRequest, Synthesizer
from gateway.errors import APIError
from gateway.metrics import Metrics
from gateway.services.forced_alignment import LANGUAGES as ALIGN_LANGUAGES
from gateway.services.forced_alignment import aligner
from gateway.text import NormalizedText, normalize
from gateway.text.chunks import to_original

_UNSPEAKABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_NOT_LETTER = re.compile(r"[\W\d_]+")
_NOT_DIGIT = re.compile(r"\D+")

# A lower bound on the speech a text becomes, so a refusal before synthesis is never wrong: the fastest rate
# measured with the embedded voice at speed 1.0 was 18 letters/s (digit words "nine nine ..."; prose 13/s,
# short words 8/s), and a digit left in the text is read as a word of ~4 letters. Texts the bound lets
# through are still stopped when the audio really produced passes the cap.
MAX_LETTERS_PER_SECOND = 20.0
LETTERS_PER_DIGIT = 4


@dataclass(frozen=True)
class SynthesisResult:
    pcm: bytes
    sample_rate: int
    chunks: list[SynthesisChunk]
    generation_s: float

    @property
    def duration(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


def check_text(text: str, max_chars: int) -> str:
    # NUL and other control characters crash espeak; lone surrogates fail UTF-8 encoding (found by
    # bench/fuzz_http.py). One space per character keeps every character offset valid.
    text = _UNSPEAKABLE.sub(" ", text) if text else text
    if not text or not text.strip():
        raise APIError(400, "empty_text", "text must not be empty")
    if len(text) > max_chars:
        raise APIError(
            413,
            "text_too_long",
            f"text has {len(text)} characters; the limit is {max_chars}",
            limit=max_chars,
        )
    return text


class SpeechTooLongError(APIError):
    """413: the audio would pass MAX_SPEECH_SECONDS (estimated before synthesis, or measured during it)."""

    def __init__(self, limit_s: float, detail: str) -> None:
        super().__init__(
            413,
            "speech_too_long",
            f"{detail}; the limit is {limit_s:g} s of audio per request (MAX_SPEECH_SECONDS)",
            limit_seconds=limit_s,
        )


def min_speech_seconds(spoken_text: str, speed: float) -> float:
    """At least this many seconds of audio: letters, and digits as words, at the fastest rate measured."""
    letters = len(_NOT_LETTER.sub("", spoken_text))
    digit_count = len(_NOT_DIGIT.sub("", spoken_text))
    return (letters + LETTERS_PER_DIGIT * digit_count) / MAX_LETTERS_PER_SECOND / max(speed, 0.01)


def resolve(synth: Synthesizer, request: SynthesisRequest) -> SynthesisRequest:
    """The engine's validation, keeping the gateway-level flags (normalize, timings) whatever the engine
    copies over."""
    resolved = synth.resolve(request)
    return replace(resolved, normalize=request.normalize, timings=request.timings)


async def normalize_request(request: SynthesisRequest) -> tuple[SynthesisRequest, NormalizedText]:
    """Text normalization for every engine: the engine gets the spoken form, the map leads back."""
    # The rules read American English; another language's engine reads its own numbers ("3人" must not
    # become "three人").
    if not request.normalize or request.language != "en":
        return request, NormalizedText.identity(request.text)
    # Regexes over a long text take a few ms per thousand characters: keep them off the event loop.
    text = request.text
    norm = normalize(text) if len(text) < 2000 else await asyncio.to_thread(normalize, text)
    return replace(request, text=norm.text, normalize=False), norm


async def stream_speech(
    synth: Synthesizer,
    request: SynthesisRequest,
    metrics: Metrics | None = None,
    max_seconds: float | None = None,
) -> AsyncGenerator[SynthesisChunk, None]:
    """The synthesizer's stream with per-sentence latency recorded, the text normalized when the request asks
    (the default), and every offset (chunk and word timings) pointing into the ORIGINAL request text.

    Chunks come as the engine yields them: whole sentences, or pieces of one (SynthesisChunk.final). When
    word timings are asked for and the engine has none, a sentence's pieces are joined and force-aligned:
    timings then cost the sub-sentence streaming, and words always come with a whole sentence.

    `max_seconds` caps the audio: a text that must run longer is refused (413 `speech_too_long`) before any
    synthesis, and the stream raises the same error instead of yielding audio that would pass it."""
    spoken, norm = await normalize_request(request)
    if max_seconds is not None:
        estimate = min_speech_seconds(spoken.text, spoken.speed)
        if estimate > max_seconds:
            raise SpeechTooLongError(max_seconds, f"the text reads for at least {estimate:.0f} s")
    produced = 0.0
    align = request.timings and spoken.language in ALIGN_LANGUAGES
    pieces: list[SynthesisChunk] = []  # the sentence being joined for alignment
    gen = synth.stream(spoken)
    try:
        async for chunk in gen:
            produced += len(chunk.pcm) / 2 / chunk.sample_rate
            if max_seconds is not None and produced > max_seconds:
                raise SpeechTooLongError(max_seconds, "the text reads for longer")
            if metrics is not None and chunk.final:  # a final chunk's time is its whole sentence's
                metrics.audio_generation_latency.labels(engine=synth.name, kind="sentence").observe(
                    chunk.generation_s
                )
            if align and not chunk.words:
                # The engine has no alignment of its own (vLLM-Omni): force-align the sentence's text.
                pieces.append(chunk)
                if not chunk.final:
                    continue
                chunk = replace(chunk, pcm=b"".join(p.pcm for p in pieces))
                pieces.clear()
                if chunk.pcm:
                    sentence = spoken.text[chunk.text_start : chunk.text_end]
                    words = await aligner().align(chunk.pcm, chunk.sample_rate, sentence, chunk.text_start)
                    chunk = replace(chunk, words=tuple(words))
            yield to_original(chunk, norm) if request.normalize else chunk
    finally:
        await gen.aclose()


async def synthesize(
    synth: Synthesizer,
    request: SynthesisRequest,
    metrics: Metrics | None = None,
    max_seconds: float | None = None,
) -> SynthesisResult:
    t0 = time.perf_counter()
    chunks = [c async for c in stream_speech(synth, request, metrics, max_seconds)]
    elapsed = time.perf_counter() - t0
    if metrics is not None:
        metrics.audio_generation_latency.labels(engine=synth.name, kind="request").observe(elapsed)
    pcm = b"".join(c.pcm for c in chunks)
    if not pcm:
        raise APIError(400, "nothing_to_say", "the text holds nothing that can be spoken")
    return SynthesisResult(pcm=pcm, sample_rate=synth.sample_rate, chunks=chunks, generation_s=elapsed)
