"""The pre-pass that keeps espeak-ng's crashing input class away from it (phonemizer_guard.py).

The fuzz tests run Piper's real espeak-ng in child processes: a segfault there is an exit status here.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys

import pytest

from gateway.engines.embedded.phonemizer_guard import MAX_CHAIN_LETTERS, guard_text

INITIAL = re.compile(r"(?<![^\W_])[^\W\d_](?![^\W_])")  # a letter standing alone
ALPHABET = "".join(c + "." for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")

NORMAL = [
    "The quick brown fox jumps over the lazy dog.",
    "Dr. Smith met J.R.R. Tolkien at 9 a.m. in the U.S.A., i.e. in Washington D.C.",
    "Mr. and Mrs. Jones, Ph.D., e.g. the one from St. Louis, arrived at 5 p.m.",
    "Version 1.2.3.4 of the file a.b.c.d.e.f.g.h is on www.example.com.",
    "He said: wait... what?! ... and left. A. B. Cee wrote it.",
    "Ünïcödé, naïve café résumé — «quoted» text; 3.14159 and $3.50.",
]

# The class the fuzzing found, with the smallest members known to crash espeak-ng in a fresh process.
CRASHERS = [
    "a." * 100,
    "i.e." * 91,
    ALPHABET * 4,
    "é.ü.ø.å.ç.ñ." * 10,
    "𝐀.𝐁.𝐂.𝐃." * 8,
    "hello" + "x.y.z." * 40,
    '"' + "q.w.e.r.t.y." * 20 + '"',
    "k..l..m.." * 40,
    " ".join("u.m.q.f.p.r.g.t.z.c." * 5 for _ in range(3)),
]


@pytest.mark.parametrize("text", NORMAL)
def test_normal_text_is_left_alone(text: str) -> None:
    assert guard_text(text) == text


@pytest.mark.parametrize("text", CRASHERS)
def test_long_chains_of_initials_are_cut_without_moving_a_character(text: str) -> None:
    out = guard_text(text)
    assert len(out) == len(text)
    changed = [(a, b) for a, b in zip(text, out, strict=True) if a != b]
    assert changed and all((a, b) == (".", " ") for a, b in changed)  # only periods become spaces
    # Every whitespace-free piece now holds at most the allowed number of initials.
    assert max(len(INITIAL.findall(piece)) for piece in out.split()) <= MAX_CHAIN_LETTERS


def test_a_chain_at_the_limit_is_left_alone_and_one_more_letter_is_cut() -> None:
    at_limit = ".".join("abcdefghijklmnopqrstuvwxyz"[:MAX_CHAIN_LETTERS]) + "."
    assert guard_text(at_limit) == at_limit
    over = ".".join("abcdefghijklmnopqrstuvwxyz"[: MAX_CHAIN_LETTERS + 1]) + "."
    assert guard_text(over) == over[: 2 * MAX_CHAIN_LETTERS - 1] + " " + over[2 * MAX_CHAIN_LETTERS :]


def adversarial(seed: int, count: int) -> list[str]:
    """Random members of the crashing class and its neighbours: initials of any script and case, joined
    by one or more periods, with spaces, words, quotes or brackets around, 5 to 160 letters long."""
    rng = random.Random(seed)
    scripts = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "éüøåçñÉÜØ",
        "αβγδεζ",
        "жзийкл",
        "中文日本語",
        "𝐀𝐁𝐂𝒜𝔸",
        "कखगघ",
    ]
    out = []
    for _ in range(count):
        letters = rng.choice(scripts)
        n = rng.randint(5, 160)
        joints = rng.choice([["."], ["."], [".", ".."], [".", ". "], [". "], ["...", "."]])
        chain = "".join(rng.choice(letters) + rng.choice(joints) for _ in range(n))
        wrap = rng.choice(["{}", "{}", '"{}"', "({})", "hello{}", "Say {} now.", "{} and {}"])
        out.append(wrap.replace("{}", chain)[:240])  # the sentence splitter's longest span
    return out


PHONEMIZE = r"""
import json, sys
from piper import PiperVoice
from gateway.engines.embedded.phonemizer_guard import guard_text
from gateway.engines.embedded.piper_worker import bundled_voice_paths

model, config = bundled_voice_paths()
voice = PiperVoice.load(model, config_path=config)
guard = sys.argv[1] == "guarded"
for text in json.load(sys.stdin):
    sentences = voice.phonemize(guard_text(text) if guard else text)
    assert sentences, text
print("survived")
"""


def phonemize_in_child(texts: list[str], mode: str) -> subprocess.CompletedProcess[str]:
    """All texts through Piper's espeak-ng in ONE process: damage done by one call crashes a later one."""
    return subprocess.run(
        [sys.executable, "-c", PHONEMIZE, mode],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_fuzzed_adversarial_text_never_crashes_the_phonemizer_once_guarded() -> None:
    corpus = adversarial(seed=18, count=200)
    # The corpus is adversarial: unguarded, it kills espeak-ng (this is what made the gateway die).
    raw = phonemize_in_child(corpus, "raw")
    assert raw.returncode in (-signal.SIGSEGV, -signal.SIGABRT), (raw.returncode, raw.stderr[-2000:])
    guarded = phonemize_in_child(corpus, "guarded")
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert guarded.stdout.strip() == "survived"
