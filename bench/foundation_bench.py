"""Real-time factor of POST /read and POST /voice/transcribe through the gateway, against the same engines
called in-process (baseline measured in the same run). RTF = processing seconds / audio seconds.

    python bench/foundation_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio.pcm import pcm16_to_float, read_wav
from gateway.audio.resample import resample
from gateway.engines.base import SynthesisRequest
from gateway.engines.registry import build_engines
from gateway.services.speech import synthesize
from gateway.settings import load_settings
from tests.support import ServerProcess

TEXT = (
    "The gateway reads articles aloud, one sentence at a time. It streams audio as soon as the first "
    "sentence is ready. Listeners can pause, resume, or cancel at any moment. Transcription turns speech "
    "back into text with segment times."
)


async def in_process(rounds: int) -> tuple[float, float, bytes]:
    engines = build_engines(load_settings())
    await engines.start()
    try:
        tts_rtf, asr_rtf, wav_pcm = [], [], b""
        for _ in range(rounds):
            t0 = time.perf_counter()
            result = await synthesize(engines.synthesizer, SynthesisRequest(text=TEXT))
            tts_rtf.append((time.perf_counter() - t0) / result.duration)
            wav_pcm = result.pcm
            samples = resample(pcm16_to_float(wav_pcm), result.sample_rate, 16000)
            t0 = time.perf_counter()
            await engines.transcriber.transcribe(samples, "en")
            asr_rtf.append((time.perf_counter() - t0) / result.duration)
        return statistics.median(tts_rtf), statistics.median(asr_rtf), wav_pcm
    finally:
        await engines.aclose()


def through_gateway(url: str, rounds: int) -> tuple[float, float]:
    tts_rtf, asr_rtf = [], []
    with httpx.Client(base_url=url, timeout=120) as c:
        for _ in range(rounds):
            t0 = time.perf_counter()
            wav = c.post("/read", json={"text": TEXT}).content
            elapsed = time.perf_counter() - t0
            duration = read_wav(wav).duration
            tts_rtf.append(elapsed / duration)
            t0 = time.perf_counter()
            r = c.post("/voice/transcribe", files={"audio": ("a.wav", wav, "audio/wav")})
            r.raise_for_status()
            asr_rtf.append((time.perf_counter() - t0) / duration)
    return statistics.median(tts_rtf), statistics.median(asr_rtf)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base_tts, base_asr, _ = asyncio.run(in_process(args.rounds))
    server = ServerProcess("serve")
    try:
        server.wait_ready()
        through_gateway(server.url, 1)  # warm-up
        gw_tts, gw_asr = through_gateway(server.url, args.rounds)
    finally:
        server.stop()
    print(f"{'':28}{'in-process':>12}{'gateway':>12}{'ratio':>8}")
    print(f"{'/read RTF (median)':28}{base_tts:12.4f}{gw_tts:12.4f}{gw_tts / base_tts:8.2f}")
    print(f"{'/voice/transcribe RTF':28}{base_asr:12.4f}{gw_asr:12.4f}{gw_asr / base_asr:8.2f}")


if __name__ == "__main__":
    main()
