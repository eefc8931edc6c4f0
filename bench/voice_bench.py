"""WS /voice latency: commit -> first reply audio (p50 / p95) on the embedded engine, with each stage's share,
against a baseline measured in the same run: the same engines in-process, one after another without
streaming (ASR -> whole LLM reply -> TTS of the whole reply), which is what sentence pipelining removes.

Also: server VAD end of speech -> first audio (real-time streaming, silence_duration_ms included) and the
cost of the streaming Silero VAD per 20 ms frame.

    python bench/voice_bench.py [--rounds 2] [--max-tokens 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.audio.vad import StreamingVAD
from gateway.engines.base import ChatMessage, ConversationRequest, SynthesisRequest
from gateway.engines.registry import Engines, build_engines
from gateway.services.speech import synthesize
from gateway.sessions.voice.config import DEFAULT_INSTRUCTIONS
from gateway.settings import load_settings
from tests.gateway.voice_client import FRAME_BYTES, QUESTIONS, RATE, VoiceClient, silence, spoken
from tests.support import ServerProcess


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def baseline_turn(engines: Engines, pcm: bytes, max_tokens: int) -> float:
    """Sequential, non-streaming: the first audio exists only once the whole reply is synthesized."""
    t0 = time.perf_counter()
    samples = resample(pcm16_to_float(pcm), RATE, engines.transcriber.sample_rate)
    text = (await engines.transcriber.transcribe(samples, "en")).text
    history = [ChatMessage("system", DEFAULT_INSTRUCTIONS), ChatMessage("user", text)]
    request = ConversationRequest(history=history, max_tokens=max_tokens)
    reply = "".join([e.text async for e in engines.responder.respond(request)])
    await synthesize(engines.synthesizer, SynthesisRequest(text=reply or "Okay."))
    return time.perf_counter() - t0


async def gateway_turn(client: VoiceClient, pcm: bytes) -> tuple[float, dict, dict]:
    await client.stream(pcm)
    t0 = time.perf_counter()
    await client.send("audio.commit")
    first = None
    while True:
        message = await client.ws.recv()
        if isinstance(message, bytes):
            if first is None:
                first = time.perf_counter() - t0
            continue
        event = json.loads(message)
        if event["type"] == "response.done":
            break
        if event["type"] == "error":
            raise RuntimeError(event)
    assert first is not None
    return first, event["timings"], event["usage"]


async def commit_turns(
    server: ServerProcess, questions: list[bytes], rounds: int, max_tokens: int
) -> tuple[list, list[float]]:
    """Gateway turns, each followed by the baseline on the same question: both see the same machine load."""
    engines = build_engines(load_settings())
    await engines.start()
    rows, base = [], []
    try:
        for _ in range(rounds):
            client = await VoiceClient.connect(
                server.ws_url, turn_detection=None, max_response_tokens=max_tokens
            )
            try:
                for pcm in questions:
                    rows.append(await gateway_turn(client, pcm))
                    base.append(await baseline_turn(engines, pcm, max_tokens))
            finally:
                await client.close()
    finally:
        await engines.aclose()
    return rows, base


async def vad_turns(
    server: ServerProcess, questions: list[bytes], max_tokens: int
) -> tuple[list[float], list[float], int]:
    """Speech streamed live, then silence until the answer ends: end of speech -> first reply audio, and the
    ASR wait after VAD's commit (early transcription during the pause hides most of it)."""
    out, asr = [], []
    client = await VoiceClient.connect(server.ws_url, max_response_tokens=max_tokens)
    silence_ms = client.session["turn_detection"]["silence_duration_ms"]
    try:
        for pcm in questions:
            start = time.perf_counter()
            for i in range(0, len(pcm), FRAME_BYTES):
                await client.ws.send(pcm[i : i + FRAME_BYTES])
                await asyncio.sleep(max(0.0, start + (i + FRAME_BYTES) / (2 * RATE) - time.perf_counter()))
            end_of_speech = time.perf_counter()
            quiet = silence(0.02)

            async def keep_talking(quiet: bytes = quiet) -> None:
                while True:
                    await client.ws.send(quiet)
                    await asyncio.sleep(0.02)

            talker = asyncio.create_task(keep_talking())
            first = None
            try:
                while True:
                    message = await client.ws.recv()
                    if isinstance(message, bytes):
                        if first is None:
                            first = time.perf_counter() - end_of_speech
                        continue
                    event = json.loads(message)
                    if event["type"] == "response.done":
                        asr.append(event["timings"]["asr_ms"])
                        break
            finally:
                talker.cancel()
            assert first is not None
            out.append(first)
    finally:
        await client.close()
    return out, asr, silence_ms


def vad_cost() -> float:
    """Streaming Silero: milliseconds of CPU per 20 ms frame at 24 kHz."""
    vad = StreamingVAD(RATE)
    audio = (np.random.default_rng(0).standard_normal(RATE * 10) * 0.1).astype(np.float32)
    frame = RATE // 50
    t0 = time.perf_counter()
    for i in range(0, audio.size, frame):
        vad.process(audio[i : i + frame])
    return (time.perf_counter() - t0) / (audio.size / frame) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="passes over the questions (one connection each)"
    )
    parser.add_argument("--max-tokens", type=int, default=60)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    # Audio ahead of real time without bound: turns end sooner; the first frame leaves just as early.
    server = ServerProcess("serve", env={"VOICE_AUDIO_LEAD_MS": "60000"})
    try:
        server.wait_ready()
        questions = [spoken(server.url, q) for q in QUESTIONS]
        rows, base = asyncio.run(commit_turns(server, questions, args.rounds, args.max_tokens))
        vad_firsts, vad_asr, silence_ms = asyncio.run(vad_turns(server, questions[:3], args.max_tokens))
    finally:
        server.stop()

    load_after = os.getloadavg()[0]
    firsts = [r[0] * 1000 for r in rows]
    t = {k: [r[1][k] for r in rows if r[1].get(k) is not None] for k in rows[0][1]}
    tps = [r[2]["tokens_per_second"] for r in rows if r[2].get("tokens_per_second")]
    p50 = statistics.median(firsts)
    print(f"machine: {os.cpu_count()} cores, load average {load_before:.1f} before, {load_after:.1f} after")
    print(
        f"WS /voice, embedded engine: {len(rows)} turns "
        f"({args.rounds} connections x {len(questions)} questions)"
    )
    print(f"commit -> first reply audio (client):  p50 {p50:7.0f} ms   p95 {pct(firsts, 95):7.0f} ms")
    server_first = statistics.median(t["first_audio_ms"])
    print(f"commit -> first reply audio (server):  p50 {server_first:7.0f} ms")
    stages = [
        ("ASR (faster-whisper tiny.en)", statistics.median(t["asr_ms"])),
        ("LLM: prompt -> first sentence", statistics.median(t["llm_first_sentence_ms"])),
        ("TTS: first sentence (Piper)", statistics.median(t["tts_first_chunk_ms"])),
    ]
    rest = server_first - sum(v for _, v in stages)
    for name, value in [*stages, ("other (queues, resampling, send)", rest)]:
        print(f"  {name:36s} {value:7.0f} ms  {100 * value / server_first:5.1f} %")
    print(f"  (LLM time to first token: p50 {statistics.median(t['llm_first_token_ms']):.0f} ms)")
    print(f"LLM decode: {statistics.median(tps):.0f} tokens/s (median)")
    print(
        f"server VAD, end of speech -> first audio: p50 {statistics.median(vad_firsts) * 1000:.0f} ms "
        f"(includes silence_duration_ms={silence_ms}) over {len(vad_firsts)} turns; "
        f"ASR wait after the VAD commit p50 {statistics.median(vad_asr):.0f} ms"
    )
    print(f"streaming Silero VAD: {vad_cost():.3f} ms CPU per 20 ms frame")
    base_ms = [b * 1000 for b in base]
    b50 = statistics.median(base_ms)
    print(
        f"baseline (in-process, sequential, no streaming, interleaved): p50 {b50:.0f} ms  "
        f"p95 {pct(base_ms, 95):.0f} ms"
    )
    print(
        f"ratio pipelined / baseline (p50): {p50 / b50:.2f}   "
        f"goal < 1000 ms p50: {'met' if p50 < 1000 else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
