"""Fuzz Piper's espeak-ng phonemizer, each string in a fresh child process: which inputs segfault it?

Issue 18: `a.` x100, `i.e.` x50 and `A.B.C.…Z.` x4 killed the gateway inside espeak-ng. This finds the whole
class. Families of generated strings (chains of initials in several scripts and joints, abbreviations,
long words, punctuation runs, random Unicode) go through Piper's espeak-ng phonemizer one per child process; a
child that dies by a signal is a crash. With `--guarded` every string first goes through the gateway's
pre-pass (gateway/engines/embedded/phonemizer_guard.py), which must leave no crash at all.

    python bench/phonemizer_fuzz.py [--count 600] [--seed 1] [--guarded] [--jobs 2]

Findings (piper-tts 1.8.0) are written down in phonemizer_guard.py.
"""

from __future__ import annotations

import argparse
import json
import random
import string
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

# espeak-ng alone (no ONNX session): the phonemizer the voice uses, with the voice's own espeak language.
CHILD = r"""
import json, sys
from piper.phonemize_espeak import EspeakPhonemizer
from gateway.engines.embedded.phonemizer_guard import guard_text
from gateway.engines.embedded.piper_worker import bundled_voice_paths
language = json.loads(bundled_voice_paths()[1].read_text())["espeak"]["voice"]
text = sys.stdin.read()
EspeakPhonemizer().phonemize(language, guard_text(text) if sys.argv[1] == "guarded" else text)
"""

SCRIPTS = {
    "ascii": string.ascii_letters,
    "accented": "éüøåçñÉÜØ",
    "greek": "αβγδεζ",
    "cyrillic": "жзийкл",
    "cjk": "中文日本語",
    "math": "𝐀𝐁𝐂𝒜𝔸",
}
JOINTS = {"dot": ["."], "dot_space": [". "], "dotdot": [".."], "hyphen": ["-"], "apostrophe": ["'"]}
ABBREVIATIONS = ["i.e.", "e.g.", "U.S.", "Ph.D.", "a.m.", "Mr.", "St.", "etc.", "vs."]
NOISE = string.ascii_letters + string.digits + string.punctuation + " " * 10 + "\n\t\u00a0éß中😀…—“”"


def generate(rng: random.Random) -> tuple[str, str]:
    family = rng.choice(["chain", "chain", "abbreviations", "long_word", "punctuation", "noise"])
    n = rng.randint(5, 160)
    if family == "chain":
        script, joint = rng.choice(list(SCRIPTS)), rng.choice(list(JOINTS))
        text = "".join(rng.choice(SCRIPTS[script]) + rng.choice(JOINTS[joint]) for _ in range(n))
        return f"chain/{script}/{joint}", text
    if family == "abbreviations":
        return family, "".join(rng.choice(ABBREVIATIONS) for _ in range(n // 2))
    if family == "long_word":
        return family, "".join(rng.choice(string.ascii_letters) for _ in range(n * 2))
    if family == "punctuation":
        return family, rng.choice(["word", "a", "B"]) + rng.choice(".-_'…") * rng.randint(2, 60)
    return family, "".join(rng.choice(NOISE) for _ in range(n))


def run(text: str, mode: str) -> int:
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, mode], input=text, capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return -999
    return done.returncode


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--guarded", action="store_true")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cases = [generate(rng) for _ in range(args.count)]
    mode = "guarded" if args.guarded else "raw"
    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(lambda case: run(case[1], mode), cases))
    totals: Counter[str] = Counter(family for family, _ in cases)
    crashes: Counter[str] = Counter(family for (family, _), rc in zip(cases, codes, strict=True) if rc != 0)
    print(f"{args.count} strings ({mode}), {sum(crashes.values())} crashed")
    for family in sorted(totals):
        print(f"  {family:28} {crashes[family]:4} / {totals[family]}")
    worst = [(len(t), family, rc, t[:60]) for (family, t), rc in zip(cases, codes, strict=True) if rc != 0]
    for length, family, rc, head in sorted(worst)[:10]:
        print(f"  crash rc={rc} len={length} {family}: {json.dumps(head, ensure_ascii=False)}")


if __name__ == "__main__":
    main()
