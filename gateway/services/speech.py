"""Whole-text synthesis on any Synthesizer, with validation and metrics."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from gateway.engines.base import SynthesisChunk, SynthesisRequest, Synthesizer
from gateway.errors import APIError
from gateway.metrics import Metrics
from gateway.services.forced_alignment import LANGUAGES as ALIGN_LANGUAGES
from gateway.services.forced_alignment import aligner
from gateway.text import NormalizedText, normalize
from gateway.text.chunks import to_original

_UNSPEAKABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


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


def resolve(synth: Synthesizer, request: SynthesisRequest) -> SynthesisRequest:
    """The engine's validation, keeping the gateway-level flags (normalize, timings) whatever the engine
    copies over."""
    resolved = synth.resolve(request)
    return replace(resolved, normalize=request.normalize, timings=request.timings)


async def normalize_request(request: SynthesisRequest) -> tuple[SynthesisRequest, NormalizedText]:
    """Text normalization for every engine: the engine gets the spoken form, the map leads back."""
    if not request.normalize:
        return request, NormalizedText.identity(request.text)
    # Regexes over a long text take a few ms per thousand characters: keep them off the event loop.
    text = request.text
    norm = normalize(text) if len(text) < 2000 else await asyncio.to_thread(normalize, text)
    return replace(request, text=norm.text, normalize=False), norm


async def stream_speech(
    synth: Synthesizer, request: SynthesisRequest, metrics: Metrics | None = None
) -> AsyncIterator[SynthesisChunk]:
    """The synthesizer's stream with per-sentence latency recorded, the text normalized when the request asks
    (the default), and every offset (chunk and word timings) pointing into the ORIGINAL request text."""
    spoken, norm = await normalize_request(request)
    gen = synth.stream(spoken)
    try:
        async for chunk in gen:
            if metrics is not None:
                metrics.audio_generation_latency.labels(engine=synth.name, kind="sentence").observe(
                    chunk.generation_s
                )
            if request.timings and not chunk.words and chunk.pcm and spoken.language in ALIGN_LANGUAGES:
                # The engine has no alignment of its own (vLLM-Omni): force-align the sentence's text.
                sentence = spoken.text[chunk.text_start : chunk.text_end]
                words = await aligner().align(chunk.pcm, chunk.sample_rate, sentence, chunk.text_start)
                chunk = replace(chunk, words=tuple(words))
            yield to_original(chunk, norm) if request.normalize else chunk
    finally:
        await gen.aclose()  # type: ignore[attr-defined]


async def synthesize(
    synth: Synthesizer, request: SynthesisRequest, metrics: Metrics | None = None
) -> SynthesisResult:
    t0 = time.perf_counter()
    chunks = [c async for c in stream_speech(synth, request, metrics)]
    elapsed = time.perf_counter() - t0
    if metrics is not None:
        metrics.audio_generation_latency.labels(engine=synth.name, kind="request").observe(elapsed)
    pcm = b"".join(c.pcm for c in chunks)
    if not pcm:
        raise APIError(400, "nothing_to_say", "the text holds nothing that can be spoken")
    return SynthesisResult(pcm=pcm, sample_rate=synth.sample_rate, chunks=chunks, generation_s=elapsed)
