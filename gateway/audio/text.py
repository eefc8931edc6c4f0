"""Split text into sentence-sized spans for pipelined synthesis, keeping offsets into the original text.

Rules: a sentence ends at . ! ? (or … and runs of them, with closing quotes/brackets) followed by
whitespace, except after a known abbreviation, a single initial ("J. Smith") or inside numbers
("3.14", "v1.2"); and at Japanese 。！？ (no space after them), except in a quote that と or って continues.
Line breaks that separate paragraphs end a sentence too. A sentence longer than `max_chars` is cut at the last
clause boundary (, ; : – 、) before the limit, else at a space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "mx",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "mt",
        "ft",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "cf",
        "al",
        "approx",
        "dept",
        "est",
        "fig",
        "inc",
        "ltd",
        "co",
        "corp",
        "no",
        "nos",
        "vol",
        "vols",
        "pp",
        "p",
        "ch",
        "sec",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "u.s",
        "u.k",
        "a.m",
        "p.m",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "rev",
        "hon",
        "pres",
        "gov",
        "sen",
        "rep",
        "ave",
        "blvd",
        "rd",
    ]
)

# Linear time on hostile text: a run of terminators is tried once, from its first character (the lookbehind),
# and never given back (possessive quantifiers). Without both, "!" * 50_000 + "x" rescans the run from every
# position: quadratic, a minute of CPU holding the GIL.
_TERMINATOR = re.compile(r"""(?<![.!?…])([.!?…]++)(["'”’)\]]*+)(\s++|$)""")
# Japanese and Chinese end a sentence at full-width 。！？ with no space after; a closing quote stays with it.
_CJK_TERMINATOR = re.compile(r"(?<![。！？])([。！？]++)([」』）”’]*+)")
_PARAGRAPH = re.compile(r"\n\s*\n")
_CLAUSE = re.compile(r"[,;:–—](?=\s)|[、，]")


@dataclass(frozen=True)
class TextSpan:
    start: int  # character offset into the original text (inclusive)
    end: int  # exclusive
    text: str


def _is_abbreviation(text: str, dot_index: int) -> bool:
    """True when the '.' at dot_index closes an abbreviation or an initial rather than a sentence."""
    word_start = dot_index
    while word_start > 0 and not text[word_start - 1].isspace() and text[word_start - 1] not in "(\"'“‘":
        word_start -= 1
    word = text[word_start:dot_index].lower()
    if not word:
        return False
    if word in ABBREVIATIONS:
        return True
    # Single initials ("J.") and dotted acronyms ("U.S.") are not sentence ends.
    return (len(word) == 1 and word.isalpha()) or (
        "." in word and all(len(p) <= 2 for p in word.split(".") if p)
    )


def _sentence_ends(text: str) -> list[int]:
    ends: list[int] = []
    for match in _TERMINATOR.finditer(text):
        punct_start = match.start(1)
        after = match.end(3)
        if match.group(1) == "." and _is_abbreviation(text, punct_start):
            # "Dr. Smith" keeps going; but "... etc. The" ends when a capital follows after a paragraph.
            continue
        nxt = text[after : after + 1]
        if nxt and nxt.islower():
            continue  # "e.g. this" or an ellipsis mid-sentence
        ends.append(match.end(2))
    for match in _CJK_TERMINATOR.finditer(text):
        if match.group(2) and text[match.end(2) : match.end(2) + 1] in ("と", "っ"):
            continue  # 「本当？」と言った: the quote is part of the sentence
        ends.append(match.end(2))
    for match in _PARAGRAPH.finditer(text):
        ends.append(match.start())
    return sorted(set(ends))


def _cut_long(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    pieces: list[tuple[int, int]] = []
    while end - start > max_chars:
        window = text[start : start + max_chars]
        cut = -1
        for m in _CLAUSE.finditer(window):
            if m.end() > max_chars // 3:
                cut = m.end()
        if cut == -1:
            cut = window.rfind(" ")
            if cut <= 0:
                cut = max_chars
        pieces.append((start, start + cut))
        start += cut
    pieces.append((start, end))
    return pieces


def split_sentences(text: str, max_chars: int = 240) -> list[TextSpan]:
    """Spans in order; whitespace between them is dropped, offsets point into `text`."""
    spans: list[TextSpan] = []
    start = 0
    for boundary in [*_sentence_ends(text), len(text)]:
        if boundary <= start:
            continue
        for a, b in _cut_long(text, start, boundary, max_chars):
            # trim whitespace but keep offsets honest
            while a < b and text[a].isspace():
                a += 1
            while b > a and text[b - 1].isspace():
                b -= 1
            if a < b and any(ch.isalnum() for ch in text[a:b]):
                spans.append(TextSpan(a, b, text[a:b]))
        start = boundary
    return spans
