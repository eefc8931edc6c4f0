"""Cut a streamed reply into speakable sentences as tokens arrive: speech starts before the text ends."""

from __future__ import annotations

import re

from gateway.audio.text import split_sentences

# Markup a chat model may emit that must not be read aloud (or that the TTS would spell out).
# A link's text and target stop at the next bracket of their kind, so every match attempt scans at most to the
# next "[" or "(": linear on hostile model output such as a long run of "[" (issue 18).
_MARKUP = re.compile(r"[*_#`~>|]+|\[[^\[\]]*\]\([^()]*\)")


# A clause boundary: the punctuation must be followed by a space ("1,000" and "3:30" are not boundaries).
_FIRST_CLAUSE = re.compile(r"[,;:](?=\s)\s*")


def speakable(text: str) -> str:
    return re.sub(r"\s+", " ", _MARKUP.sub(" ", text)).strip()


class SentenceChunker:
    """`feed` token deltas; get back the sentences that are complete. A sentence is complete once the text
    after it has started (the splitter needs to see what follows a '.' to tell "Dr. Smith" from an end).

    The first chunk of a reply may end at a clause boundary (", " "; " ": ") once it is `first_clause_chars`
    long: the first audio then waits for a clause, not for a whole long sentence.
    """

    def __init__(self, max_chars: int = 200, first_clause_chars: int = 30) -> None:
        self.max_chars = max_chars
        self.first_clause_chars = first_clause_chars
        self._buf = ""
        self._emitted = False

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        spans = split_sentences(self._buf, self.max_chars)
        if len(spans) >= 2:
            done = [s.text for s in spans[:-1]]
            self._buf = self._buf[spans[-1].start :]
            self._emitted = True
            return done
        if not self._emitted and self.first_clause_chars > 0:
            for m in _FIRST_CLAUSE.finditer(self._buf):
                if m.start() >= self.first_clause_chars:
                    clause, self._buf = self._buf[: m.start() + 1].strip(), self._buf[m.end() :]
                    self._emitted = True
                    return [clause]
        return []

    def flush(self) -> list[str]:
        spans = split_sentences(self._buf, self.max_chars)
        self._buf = ""
        return [s.text for s in spans]
