"""Text rewritten piece by piece, with a map from every rewritten character back to the original span.

Word timings are computed on the text the synthesizer spoke (normalized), but clients highlight the text they
sent: `NormalizedText.to_original` turns a span of the spoken text into the span of the input it came from.
A rewritten piece maps as a whole ("three point five million dollars" -> "$3.5 million"); untouched text maps
character for character.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass(frozen=True)
class Segment:
    norm_start: int
    norm_end: int
    orig_start: int
    orig_end: int
    verbatim: bool  # copied unchanged: offsets map one to one


@dataclass(frozen=True)
class SpokenWord:
    """A word of the normalized text and the original characters it stands for."""

    text: str
    norm_start: int
    norm_end: int
    orig_start: int
    orig_end: int


class NormalizedText:
    def __init__(self, original: str, text: str, segments: list[Segment]) -> None:
        self.original = original
        self.text = text
        self.segments = segments
        self._starts = [s.norm_start for s in segments]

    @classmethod
    def identity(cls, text: str) -> NormalizedText:
        return cls(text, text, [Segment(0, len(text), 0, len(text), True)] if text else [])

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Original span [a, b) covering normalized span [start, end)."""
        if not self.segments:
            return (0, 0)
        end = max(end, start + 1)
        i = max(0, bisect.bisect_right(self._starts, start) - 1)
        lo: int | None = None
        hi: int | None = None
        while i < len(self.segments):
            seg = self.segments[i]
            if seg.norm_start >= end:
                break
            if seg.norm_end > start:
                if seg.verbatim:
                    a = seg.orig_start + max(start, seg.norm_start) - seg.norm_start
                    b = seg.orig_start + min(end, seg.norm_end) - seg.norm_start
                else:
                    a, b = seg.orig_start, seg.orig_end
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
            i += 1
        if lo is None or hi is None:  # past the end: point at the end of the original
            n = len(self.original)
            return (n, n)
        return (lo, hi)

    def words(self, start: int = 0, end: int | None = None) -> list[SpokenWord]:
        """Words of text[start:end], each with the original span it stands for."""
        end = len(self.text) if end is None else end
        out = []
        for m in _WORD.finditer(self.text, start, end):
            a, b = self.to_original(m.start(), m.end())
            out.append(SpokenWord(m.group(), m.start(), m.end(), a, b))
        return out


class Builder:
    """Accumulates verbatim and rewritten pieces in order of the original text."""

    def __init__(self, original: str) -> None:
        self.original = original
        self._parts: list[str] = []
        self._segments: list[Segment] = []
        self._len = 0

    def _last_char(self) -> str:
        return self._parts[-1][-1] if self._parts and self._parts[-1] else ""

    def verbatim(self, start: int, end: int) -> None:
        if end <= start:
            return
        piece = self.original[start:end]
        self._segments.append(Segment(self._len, self._len + len(piece), start, end, True))
        self._parts.append(piece)
        self._len += len(piece)

    def replace(self, start: int, end: int, spoken: str) -> None:
        if not spoken:
            # Nothing spoken: later offsets stay right because segments carry absolute positions.
            return
        # Keep words apart when a rewrite touches a word ("3pm" -> "three p m").
        if spoken[0].isalnum() and self._last_char().isalnum():
            spoken = " " + spoken
        nxt = self.original[end : end + 1]
        if spoken[-1].isalnum() and nxt.isalnum():
            spoken = spoken + " "
        self._segments.append(Segment(self._len, self._len + len(spoken), start, end, False))
        self._parts.append(spoken)
        self._len += len(spoken)

    def build(self) -> NormalizedText:
        return NormalizedText(self.original, "".join(self._parts), self._segments)
