"""Where each MiB of the embedded engine goes: the resident memory (RSS) each model adds when it loads, in one
process, loaded one after the other the way the gateway loads them (warm-up included where `_load` does one).

Piper runs in worker processes: its row is the workers' RSS (plus what the parent gained). Libraries shared by
several models (onnxruntime: Silero VAD, Kokoro) are counted in the first row that loads them, so the order
below is part of the figures. Then what work leaves behind: a long text rendered by Piper and its audio
transcribed three times, RSS after against RSS at load.

    [PIPER_WORKERS=1] python bench/memory_bench.py [--asr-model base]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.long_asr_bench import PROSE
from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import SynthesisRequest
from gateway.engines.embedded import kokoro_tts
from gateway.engines.embedded.llm import LlamaResponder
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.engines.embedded.whisper_asr import WhisperTranscriber
from gateway.settings import load_settings

MIB = 2**20


def rss(process: psutil.Process) -> float:
    return process.memory_info().rss / MIB


def children_rss(process: psutil.Process) -> float:
    return sum(rss(child) for child in process.children(recursive=True))


async def main(asr_model: str) -> None:
    me = psutil.Process()
    settings = load_settings(VOICE_ENGINE="embedded", ASR_MODEL=asr_model)
    executor = ThreadPoolExecutor(4)
    rows: list[tuple[str, float]] = []
    start = rss(me)
    print(f"process after imports: {start:.0f} MiB")

    before, before_children = rss(me), children_rss(me)
    piper = PiperSynthesizer(settings.audio_sample_rate, executor, workers=settings.piper_workers)
    await piper.start()
    rows.append(
        (
            f"Piper ({len(me.children(recursive=True))} worker process(es))",
            rss(me) - before + children_rss(me) - before_children,
        )
    )

    before = rss(me)
    whisper = WhisperTranscriber(executor, model=asr_model, batched_min_seconds=float("inf"))
    await whisper.start()
    rows.append((f"Whisper {asr_model} (faster-whisper int8, 2 workers, warmed up)", rss(me) - before))

    before = rss(me)
    from faster_whisper.vad import get_vad_model

    get_vad_model()
    rows.append(("Silero VAD (long-file batched path; onnxruntime first loaded here)", rss(me) - before))

    before = rss(me)
    llm = LlamaResponder.from_settings(executor, settings)
    await llm.start()
    rows.append(("SmolLM2-135M-Instruct (llama.cpp)", rss(me) - before))

    if kokoro_tts.available():
        before = rss(me)
        kokoro = kokoro_tts.KokoroSynthesizer(
            settings.audio_sample_rate, executor, cache_dir=settings.model_cache_dir
        )
        await kokoro.start()
        rows.append(("Kokoro (Japanese, the [ja] extra)", rss(me) - before))
        await kokoro.aclose()
    else:
        rows.append(("Kokoro: not installed", 0.0))

    print("| model | RSS added at load (MiB) |")
    print("|---|---|")
    for name, mib in rows:
        print(f"| {name} | {mib:.0f} |")
    print(f"| total (process + workers) | {rss(me) + children_rss(me):.0f} |")

    # What work leaves behind: onnxruntime's arena in the Piper workers, glibc's arenas in this process.
    loaded_self, loaded_workers = rss(me), children_rss(me)
    started = time.perf_counter()
    pcm = bytearray()
    async for chunk in piper.stream(piper.resolve(SynthesisRequest(PROSE, timings=True))):
        pcm += chunk.pcm
    speech = pcm16_to_float(bytes(pcm))
    clip = resample(speech, settings.audio_sample_rate, whisper.sample_rate)
    for _ in range(3):
        await whisper.transcribe(clip)
    await asyncio.sleep(3.0)  # the transcriber trims after replying; idle Piper workers release at 2 s
    print(
        f"\nafter work ({len(speech) / settings.audio_sample_rate:.0f} s of speech rendered, then "
        f"transcribed 3 times, {time.perf_counter() - started:.0f} s):"
    )
    print("| part | at load (MiB) | after work (MiB) | ratio |")
    print("|---|---|---|---|")
    for name, before, after in (
        ("this process", loaded_self, rss(me)),
        ("Piper workers", loaded_workers, children_rss(me)),
    ):
        print(f"| {name} | {before:.0f} | {after:.0f} | {after / before:.2f} |")
    await llm.aclose()
    await whisper.aclose()
    await piper.aclose()
    executor.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--asr-model", default="base", choices=["base", "tiny.en"])
    asyncio.run(main(parser.parse_args().asr_model))
