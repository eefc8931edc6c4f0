"""Keep the one class of text that crashes espeak-ng away from it, without moving a character.

Found by fuzzing Piper's espeak-ng bridge in child processes (bench/phonemizer_fuzz.py; piper-tts 1.8.0):
espeak-ng spells a chain of initials, single letters each followed by one or more periods, with or without
whitespace after them ("U.S.A.", "a.b. c.d.", "x..y..z"), as ONE abbreviation word. Once the chain's letters
pass about 100 UTF-8 bytes (about 100 ASCII letters, 50 accented, Greek or Cyrillic ones, 32 CJK or
mathematical ones) espeak-ng writes past a fixed buffer and the process dies with SIGSEGV (a general
protection fault in libc). A word before the chain ("hello.a.b.c..."), quotes or brackets around it do not
help; a digit, a two-letter word or any other separator ("-", "_", ",", "/") ends the chain. Nothing else in
thousands of random strings crashed it.

The pre-pass ends every chain after MAX_CHAIN_LETTERS initials by turning the periods between two of them
into spaces: "a.b.c d.e.f" is spelled exactly as "a.b.c.d.e.f" (letter by letter) but as separate words.
Real abbreviations are far shorter than the limit and are left alone. The replacement keeps the text's
length, so sentence spans and word timings need no offset mapping.
"""

from __future__ import annotations

import re

# Initials spelled per chunk: 16 letters of at most 4 UTF-8 bytes stay well below the ~100 bytes that crash.
MAX_CHAIN_LETTERS = 16

# An initial: a letter standing alone (no letter or digit on either side), with any marks or symbols glued to
# it ("e\u0301", "a'"); initials joined by runs of periods and optional whitespace form a chain.
_INITIAL = r"(?<![^\W_])[^\W\d_][^\w\s.]*(?![^\W_])"
_CHAIN = re.compile(rf"{_INITIAL}(?:\.+\s*{_INITIAL})+")
_PERIODS = re.compile(r"\.+")


def guard_text(text: str, max_letters: int = MAX_CHAIN_LETTERS) -> str:
    """`text` with every chain of more than `max_letters` initials broken into chains of at most that many;
    same length, character for character, everywhere else."""
    if "." not in text:
        return text
    chars: list[str] | None = None
    for chain in _CHAIN.finditer(text):
        # Inside a chain every run of periods sits between two initials (the chain ends on a letter).
        joints = list(_PERIODS.finditer(text, chain.start(), chain.end()))
        for joint in joints[max_letters - 1 :: max_letters]:
            if chars is None:
                chars = list(text)
            chars[joint.start() : joint.end()] = " " * (joint.end() - joint.start())
    return text if chars is None else "".join(chars)
