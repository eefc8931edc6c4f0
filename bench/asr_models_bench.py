"""Whisper tiny.en vs base (ASR_MODEL) on the embedded engine's own speech: word-timing accuracy, speed and
memory, one model after the other in one run.

Reference timings are Piper's: the phoneme durations its audio was generated from (the word marks /read
returns), so no estimate is involved. Each model times the same audio two ways:
  - forced alignment of the known text (gateway/services/forced_alignment.py's method: CTranslate2
    `Whisper.align` over the alignment heads), which gives the vLLM-Omni path its word marks;
  - faster-whisper's own word timestamps (verbose_json words).
Material: the sentences of tests/gateway/test_word_timings.py. Also the real-time factor of a plain
transcription (beam 1, as ASR_BEAM_SIZE's default) and the resident memory a loaded model adds (a fresh
process per model).

    python bench/asr_models_bench.py [--rounds 3] [--gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import SynthesisRequest, WordTiming
from gateway.engines.embedded.model_files import whisper_model_dir
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.services.forced_alignment import WhisperAligner
from tests.gateway.test_word_timings import PLAIN

RATE = 24000
MODELS = ("tiny.en", "base")

_RSS_PROBE = """
import resource, sys, numpy as np
from faster_whisper import WhisperModel
from gateway.engines.embedded.model_files import whisper_model_dir
def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
before = rss()
m = WhisperModel(str(whisper_model_dir(sys.argv[1])), device='cpu', compute_type='int8', num_workers=2)
list(m.transcribe(np.zeros(16000, np.float32), language='en')[0])
print(round(before, 1), round(rss(), 1))
"""


async def piper_reference() -> list[tuple[str, bytes, tuple[WordTiming, ...]]]:
    executor = ThreadPoolExecutor(2)
    synth = PiperSynthesizer(RATE, executor)
    await synth.start()
    out = []
    try:
        for text in PLAIN:
            request = synth.resolve(SynthesisRequest(text=text, timings=True))
            async for chunk in synth.stream(request):
                sentence = text[chunk.text_start : chunk.text_end]
                out.append((sentence, chunk.pcm, chunk.words))
    finally:
        await synth.aclose()
        executor.shutdown()
    return out


def aligner_for(model_name: str) -> WhisperAligner:
    from faster_whisper import WhisperModel
    from faster_whisper.tokenizer import Tokenizer

    aligner = WhisperAligner()
    model = WhisperModel(str(whisper_model_dir(model_name)), device="cpu", compute_type="int8", cpu_threads=1)
    aligner._model = model
    aligner._tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, "transcribe", "en")
    return aligner


def errors(reference: tuple[WordTiming, ...], theirs: list[tuple[str, float, float]]) -> list[float]:
    """Boundary errors (s) of words matched in order by their letters."""

    def key(w: str) -> str:
        return "".join(c for c in w.lower() if c.isalpha())

    out: list[float] = []
    j = 0
    for ref in reference:
        for k in range(j, min(j + 3, len(theirs))):
            if key(theirs[k][0]) == key(ref.text):
                out += [abs(ref.start - theirs[k][1]), abs(ref.end - theirs[k][2])]
                j = k + 1
                break
    return out


def measure(model_name: str, material: list[Any], rounds: int) -> dict[str, Any]:
    aligner = aligner_for(model_name)
    model = aligner._model
    assert model is not None
    forced: list[float] = []
    stamped: list[float] = []
    words = matched = 0
    rtf: list[float] = []
    for sentence, pcm, reference in material:
        timed = aligner.align_sync(pcm, RATE, sentence)
        forced += errors(reference, [(w.text, w.start, w.end) for w in timed])
        audio = resample(pcm16_to_float(pcm), RATE, 16000)
        segments, _ = model.transcribe(
            audio, language="en", word_timestamps=True, beam_size=1, condition_on_previous_text=False
        )
        theirs = [(w.word, w.start, w.end) for s in segments for w in s.words or ()]
        found = errors(reference, theirs)
        stamped += found
        words += len(reference)
        matched += len(found) // 2
        for _ in range(rounds):
            t0 = time.perf_counter()
            list(model.transcribe(audio, language="en", beam_size=1, condition_on_previous_text=False)[0])
            rtf.append((time.perf_counter() - t0) / (audio.size / 16000))
    probe = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, model_name],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    before, after = (float(x) for x in probe.stdout.split())
    return {
        "model": model_name,
        "forced_alignment_median_ms": round(statistics.median(forced) * 1000, 1),
        "forced_alignment_p90_ms": round(float(np.percentile(forced, 90)) * 1000, 1),
        "word_timestamps_median_ms": round(statistics.median(stamped) * 1000, 1),
        "word_timestamps_p90_ms": round(float(np.percentile(stamped, 90)) * 1000, 1),
        "word_timestamps_matched": f"{matched}/{words}",
        "rtf_p50": round(statistics.median(rtf), 3),
        "model_rss_mib": round(after - before, 1),
    }


def gateway_idle_rss(env: dict[str, str]) -> float:
    """MiB resident in a started, idle gateway (its Piper workers included) configured by `env`."""
    import psutil

    from tests.support import ServerProcess

    server = ServerProcess("serve", env=env)
    try:
        server.wait_ready()
        time.sleep(3)
        root = psutil.Process(server.proc.pid)
        return round(sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20, 1)
    finally:
        server.stop()


# Before issue 21 (tiny.en, English only), base alone, and the default (base, Japanese where installed).
GATEWAY_CONFIGS = (
    {"ASR_MODEL": "tiny.en", "TTS_JAPANESE": "false"},
    {"ASR_MODEL": "base", "TTS_JAPANESE": "false"},
    {"ASR_MODEL": "base", "TTS_JAPANESE": "true"},
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--gateway", action="store_true", help="also the idle RSS of a whole gateway per model"
    )
    args = parser.parse_args()
    material = asyncio.run(piper_reference())
    results = [measure(name, material, args.rounds) for name in MODELS]
    print(json.dumps(results, indent=2))
    if args.gateway:
        rss = [{**env, "gateway_idle_rss_mib": gateway_idle_rss(env)} for env in GATEWAY_CONFIGS]
        print(json.dumps(rss, indent=2))


if __name__ == "__main__":
    main()
