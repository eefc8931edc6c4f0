"""A synthesized chunk's offsets and word timings, moved from the spoken (normalized) text to the original."""

from __future__ import annotations

from dataclasses import replace

from gateway.engines.base import SynthesisChunk, WordTiming
from gateway.text.offsets import NormalizedText


def to_original(chunk: SynthesisChunk, norm: NormalizedText) -> SynthesisChunk:
    start, end = norm.to_original(chunk.text_start, chunk.text_end)
    if not chunk.words:
        return replace(chunk, text_start=start, text_end=end)
    return replace(chunk, text_start=start, text_end=end, words=tuple(map_words(chunk.words, norm)))


def map_words(words: tuple[WordTiming, ...], norm: NormalizedText) -> list[WordTiming]:
    """One timing per written token: the spoken words of "$3.5 million" become one entry spanning it."""
    out: list[WordTiming] = []
    original = norm.original
    for w in words:
        a, b = norm.to_original(w.text_start, w.text_end)
        if out and (out[-1].text_start, out[-1].text_end) == (a, b):
            prev = out[-1]
            out[-1] = replace(prev, end=max(prev.end, w.end), spoken=f"{prev.spoken} {w.text}")
            continue
        out.append(WordTiming(original[a:b], w.start, w.end, a, b, spoken=w.text))
    # `spoken` only says something when it differs from what was written.
    return [w if w.spoken != w.text else replace(w, spoken="") for w in out]
