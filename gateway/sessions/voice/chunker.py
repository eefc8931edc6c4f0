"""Cut a streamed reply into speakable sentences as tokens arrive: speech starts before the text ends."""

from __future__ import annotations

import re

from gateway.audio.text import split_sentences

# Markup a chat model may emit that must not be read aloud (or that the TTS would spell out).
_MARKUP = re.compile(r"[*_#`~>|]+|\[(?:[^\]]*)\]\([^)]*\)")


def speakable(text: str) -> str:
    return re.sub(r"\s+", " ", _MARKUP.sub(" ", text)).strip()


class SentenceChunker:
    """`feed` token deltas; get back the sentences that are complete. A sentence is complete once the text
    after it has started (the splitter needs to see what follows a '.' to tell "Dr. Smith" from an end)."""

    def __init__(self, max_chars: int = 200) -> None:
        self.max_chars = max_chars
        self._buf = ""

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        spans = split_sentences(self._buf, self.max_chars)
        if len(spans) < 2:
            return []
        done = [s.text for s in spans[:-1]]
        self._buf = self._buf[spans[-1].start :]
        return done

    def flush(self) -> list[str]:
        spans = split_sentences(self._buf, self.max_chars)
        self._buf = ""
        return [s.text for s in spans]
