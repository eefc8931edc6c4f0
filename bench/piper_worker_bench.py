"""What crash isolation costs: Piper in the gateway process (as before issue 18) vs in worker processes.

Per-sentence latency (median and p90 of the same sentences, rendered one at a time, then two streams at
once) and resident memory (the gateway process, plus its workers). Run on an otherwise idle machine:

    python bench/piper_worker_bench.py [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.engines.base import SynthesisRequest
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.engines.embedded.piper_worker import PiperRenderer

RATE = 24000
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Paragraph three explains how the reader keeps its place while the listener pauses and resumes.",
    "A short one.",
    "The committee reviewed the long report about the harbour, the railway and the old market hall.",
]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def summary(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    median = statistics.median(ordered)
    return f"{name}: median {median * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms (n={len(ordered)})"


async def in_process(reps: int) -> None:
    rss0 = rss_mb(os.getpid())
    t0 = time.perf_counter()
    renderer = PiperRenderer(RATE)
    load = time.perf_counter() - t0
    serial = []
    for _ in range(reps):
        for text in SENTENCES:
            t = time.perf_counter()
            renderer.render(text, 1.0, timings=True)
            serial.append(time.perf_counter() - t)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(2)

    async def one(text: str) -> float:
        t = time.perf_counter()
        await loop.run_in_executor(pool, renderer.render, text, 1.0, True)
        return time.perf_counter() - t

    parallel = []
    for _ in range(reps):
        for text in SENTENCES:
            parallel += await asyncio.gather(one(text), one(text))
    print(f"in-process: load {load:.1f} s, RSS +{rss_mb(os.getpid()) - rss0:.0f} MB (gateway process)")
    print("  " + summary("one at a time", serial))
    print("  " + summary("two at once", parallel))
    pool.shutdown()


async def workers(reps: int) -> None:
    rss0 = rss_mb(os.getpid())
    synth = PiperSynthesizer(RATE, ThreadPoolExecutor(1))
    t0 = time.perf_counter()
    await synth.start()
    load = time.perf_counter() - t0

    async def one(text: str) -> float:
        t = time.perf_counter()
        async for _ in synth.stream(SynthesisRequest(text, timings=True)):
            pass
        return time.perf_counter() - t

    serial = [await one(text) for _ in range(reps) for text in SENTENCES]
    parallel = []
    for _ in range(reps):
        for text in SENTENCES:
            parallel += await asyncio.gather(one(text), one(text))
    worker_rss = [rss_mb(pid) for pid in synth.worker_pids()]
    print(
        f"workers: load {load:.1f} s, RSS +{rss_mb(os.getpid()) - rss0:.0f} MB (gateway process) + "
        + " + ".join(f"{r:.0f}" for r in worker_rss)
        + " MB (workers)"
    )
    print("  " + summary("one at a time", serial))
    print("  " + summary("two at once", parallel))
    await synth.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", choices=["in-process", "workers"])
    args = parser.parse_args()
    if args.only != "workers":
        await in_process(args.reps)
    if args.only != "in-process":
        await workers(args.reps)


if __name__ == "__main__":
    asyncio.run(main())
