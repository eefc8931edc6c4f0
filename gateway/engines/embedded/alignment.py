"""Word timings from the synthesizer's own phoneme durations (Piper; Kokoro for Japanese).

Piper (VITS) predicts how many audio samples each phoneme id lasts; with the model's duration tensor exposed
(`PiperVoice.load(..., include_alignments=True)`) every synthesized sentence comes with per-phoneme sample
counts. Those are the durations the audio was generated from, so no estimate is involved. What remains is to
say which phonemes belong to which written word: espeak-ng sometimes merges words ("on the" -> "ɔnðə") and
its per-sentence output has no word indices. Each word is phonemized on its own and the word phoneme string
is aligned to the sentence phoneme string with difflib; a word's time runs from its first aligned phoneme to
its last.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

# Not sounds: word/sentence boundaries, stress, punctuation that espeak passes through.
_SKIP = frozenset(" ˈˌ^$_,.!?;:—–-'\"()[]…")
_JOINS = frozenset(" ˈˌ")
WORD_RE = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


@dataclass(frozen=True)
class TimedPhoneme:
    phoneme: str
    start: int  # samples from the start of the span's audio
    end: int


@dataclass(frozen=True)
class AlignedWord:
    start_char: int  # offsets into the aligned text
    end_char: int
    start: int  # samples
    end: int


def timed_phonemes(alignments: Sequence[tuple[str, int]], offset: int = 0) -> list[TimedPhoneme]:
    """Sounding phonemes with their sample spans. A word gap (" ") or stress mark carries the transition into
    the next sound, so its samples extend the phoneme before it; punctuation is a pause and belongs to no
    word."""
    out: list[TimedPhoneme] = []
    pos = offset
    for phoneme, samples in alignments:
        n = int(samples)
        if phoneme not in _SKIP:
            out.append(TimedPhoneme(phoneme, pos, pos + n))
        elif phoneme in _JOINS and out and out[-1].end == pos:
            out[-1] = TimedPhoneme(out[-1].phoneme, out[-1].start, pos + n)
        pos += n
    return out


def align_words(
    text: str,
    phonemes: Sequence[TimedPhoneme],
    phonemize_word: Callable[[str], tuple[str, ...]],
    words: Sequence[tuple[int, int, str]] | None = None,
) -> list[AlignedWord]:
    """Map each word of `text` onto the timed phonemes of its audio. `words`: (start, end, text) spans where
    the words are not space-separated (Japanese morphemes); by default the words of `text`."""
    if words is None:
        words = [(m.start(), m.end(), m.group()) for m in WORD_RE.finditer(text)]
    if not words or not phonemes:
        return []
    target: list[str] = []
    owner: list[int] = []
    for i, (_, _, word) in enumerate(words):
        for p in phonemize_word(word.lower()):
            if p not in _SKIP:
                target.append(p)
                owner.append(i)
    spoken = [p.phoneme for p in phonemes]
    first: list[int | None] = [None] * len(words)
    last: list[int | None] = [None] * len(words)

    def assign(t_index: int, p_index: int) -> None:
        w = owner[t_index]
        if first[w] is None or p_index < first[w]:  # type: ignore[operator]
            first[w] = p_index
        if last[w] is None or p_index > last[w]:  # type: ignore[operator]
            last[w] = p_index

    matcher = difflib.SequenceMatcher(a=target, b=spoken, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for k in range(i2 - i1):
                assign(i1 + k, j1 + k)
        elif tag == "replace":
            # Same stretch said differently in context ("the" ðə/ðiː): spread the word phonemes over it.
            n, m = i2 - i1, j2 - j1
            for k in range(n):
                lo = j1 + (k * m) // n
                hi = j1 + max((k + 1) * m // n - 1, (k * m) // n)
                assign(i1 + k, lo)
                assign(i1 + k, min(hi, j2 - 1))
    out: list[AlignedWord] = []
    for i, (a, b, _) in enumerate(words):
        f, la = first[i], last[i]
        if f is None or la is None:
            continue  # filled from the neighbours below
        out.append(AlignedWord(a, b, phonemes[f].start, phonemes[la].end))
    # A word with no phoneme of its own (rare: espeak dropped it) sits in the gap between its neighbours.
    if len(out) < len(words):
        done = {w.start_char: w for w in out}
        filled: list[AlignedWord] = []
        for i, (a, b, _) in enumerate(words):
            if a in done:
                filled.append(done[a])
                continue
            prev_end = filled[-1].end if filled else phonemes[0].start
            nxt = next((done[w[0]] for w in words[i + 1 :] if w[0] in done), None)
            next_start = nxt.start if nxt else phonemes[-1].end
            filled.append(AlignedWord(a, b, prev_end, max(prev_end, next_start)))
        out = filled
    # Monotonic, non-overlapping: a word ends where the next begins at the latest.
    for i in range(len(out) - 1):
        if out[i].end > out[i + 1].start:
            out[i] = AlignedWord(
                out[i].start_char, out[i].end_char, out[i].start, max(out[i].start, out[i + 1].start)
            )
    return out


def cached_word_phonemizer(phonemize: Callable[[str], list[list[str]]]) -> Callable[[str], tuple[str, ...]]:
    @lru_cache(maxsize=8192)
    def word_phonemes(word: str) -> tuple[str, ...]:
        return tuple(p for sentence in phonemize(word) for p in sentence)

    return word_phonemes
