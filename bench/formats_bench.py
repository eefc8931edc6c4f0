"""Speech output costs: encoding per format, streamed time to first audio, word timings, normalization.

    python bench/formats_bench.py [--reps 5]

1. Encoding: ~40 s of Piper speech encoded whole (gateway.audio.encode) and incrementally sentence by
   sentence (gateway.audio.stream_encode), per format: real-time factor (encode CPU seconds / audio seconds)
   and bytes per second of audio, against pcm.
2. Time to first audio of POST /v1/audio/speech streamed as mp3 / opus / aac / flac / wav against pcm, on a
   real gateway process (embedded engine): time from sending the request to the first audio byte, median of
   `reps` runs interleaved across formats. Goal: within 10 % of pcm.
3. Word timings: Piper synthesis of the same text with and without timings (alignment output, phoneme to
   word mapping, offsets back to the original text), wall and CPU time, RTF.
4. Normalization: microseconds per character of input.

Bounded: a few minutes on a busy 2-core machine (--reps 5). Prints absolute figures and ratios against the
baseline of the same run; --skip-server / --only-ttfa run parts.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio.encode import encode
from gateway.audio.stream_encode import StreamEncoder
from gateway.engines.base import SynthesisRequest
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.services.speech import stream_speech
from gateway.services.speech_output import ENCODE_SLICE_S
from gateway.text import normalize
from tests.support import ServerProcess

RATE = 24000
FORMATS = ("pcm", "wav", "mp3", "opus", "aac", "flac")
TEXT = (
    "On May 21st, 2024, Dr. Alvarez presented the quarterly results to the board. Revenue rose 12.5% to "
    "$3.5 million, while costs fell by 4%. The team shipped 3,497 units from the St. Louis plant, about 40% "
    "more than last year. Deliveries left at 7:30 a.m. every weekday. Customers wrote to "
    "support@example.com or visited www.example.com/help for answers. The next review is planned for "
    "2025-01-15, e.g. after the holidays. Temperatures in the warehouse stayed between 18 and 22°C. The "
    "board thanked everyone and closed the meeting at 11:45."
)
STREAM_TEXT = (
    "Streaming starts with the first sentence. The second sentence follows while the first one plays. "
    "A third sentence closes the test."
)


async def _synth(synth: PiperSynthesizer, text: str, timings: bool) -> tuple[list, float, float]:
    """Chunks, wall seconds, CPU seconds of this process (all threads): CPU time is the cost; wall time on a
    shared machine also holds other people's work."""
    t0, c0 = time.perf_counter(), time.process_time()
    chunks = [c async for c in stream_speech(synth, SynthesisRequest(text=text, timings=timings))]
    return chunks, time.perf_counter() - t0, time.process_time() - c0


def bench_encoding(chunks: list, reps: int) -> None:
    pcm = b"".join(c.pcm for c in chunks)
    seconds = len(pcm) / 2 / RATE
    print(f"\n1. Encoding {seconds:.1f} s of speech ({len(chunks)} sentences), best of {reps}")
    print(
        f"{'format':7} {'whole RTF':>10} {'stream RTF':>11} {'bytes/s':>9} {'kbit/s':>7} {'size vs pcm':>12}"
    )
    pcm_bytes = len(pcm) / seconds
    for fmt in FORMATS:
        whole = min(_timed(lambda fmt=fmt: encode(pcm, RATE, fmt)) for _ in range(reps))
        size = len(encode(pcm, RATE, fmt))

        def streamed(fmt: str = fmt) -> int:
            enc = StreamEncoder(fmt, RATE)
            n = sum(len(enc.write(c.pcm)) for c in chunks)
            return n + len(enc.finish())

        stream = min(_timed(streamed) for _ in range(reps))
        rate = size / seconds
        print(
            f"{fmt:7} {whole / seconds:10.5f} {stream / seconds:11.5f} {rate:9.0f} {rate * 8 / 1000:7.1f} "
            f"{rate / pcm_bytes:11.3f}x"
        )


def _timed(fn: object) -> float:
    """CPU seconds: the encoders are single-threaded, so this is their cost whatever else the machine runs."""
    t0 = time.process_time()
    fn()  # type: ignore[operator]
    return time.process_time() - t0


def bench_ttfa(reps: int) -> None:
    print(f"\n2b. Time to first audio, POST /v1/audio/speech streamed, median of {reps} (rotating order)")
    server = ServerProcess("serve")
    try:
        server.wait_ready()
        results: dict[str, list[float]] = {f: [] for f in FORMATS}
        totals: dict[str, list[float]] = {f: [] for f in FORMATS}
        with httpx.Client(base_url=server.url, timeout=120) as client:
            body = {"model": "tts-1", "voice": "alloy", "input": STREAM_TEXT}
            client.post("/v1/audio/speech", json={**body, "response_format": "pcm"}).read()  # warm-up
            for rep in range(reps):
                # A different order each round: no format always runs first, right after a pause, or last.
                order = FORMATS[rep % len(FORMATS) :] + FORMATS[: rep % len(FORMATS)]
                for fmt in order:
                    t0 = time.perf_counter()
                    first = None
                    with client.stream(
                        "POST", "/v1/audio/speech", json={**body, "response_format": fmt}
                    ) as r:
                        for piece in r.iter_raw():
                            if piece and first is None:
                                first = time.perf_counter() - t0
                    results[fmt].append(first or float("nan"))
                    totals[fmt].append(time.perf_counter() - t0)
        base = statistics.median(results["pcm"])
        print(f"{'format':7} {'TTFA ms':>8} {'vs pcm':>8} {'total ms':>9}")
        for fmt in FORMATS:
            ttfa = statistics.median(results[fmt])
            print(
                f"{fmt:7} {ttfa * 1000:8.1f} {100 * (ttfa / base - 1):+7.1f}% "
                f"{statistics.median(totals[fmt]) * 1000:9.1f}"
            )
    finally:
        server.stop()


async def bench_timings(synth: PiperSynthesizer, reps: int) -> list:
    print(f"\n3. Word timings: synthesis of the same text with and without (interleaved), median of {reps}")
    runs: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    chunks: list = []
    for _ in range(reps):
        for timings in (False, True):
            chunks, wall, cpu = await _synth(synth, TEXT, timings)
            runs[timings].append((wall, cpu))
    seconds = sum(len(c.pcm) for c in chunks) / 2 / RATE
    words = sum(len(c.words) for c in chunks)
    print(f"audio {seconds:.1f} s, {words} timed words (original tokens)")
    base_cpu = statistics.median(c for _, c in runs[False])
    for timings, label in ((False, "without timings"), (True, "with timings   ")):
        wall = statistics.median(w for w, _ in runs[timings])
        cpu = statistics.median(c for _, c in runs[timings])
        print(
            f"{label}: wall {wall * 1000:7.1f} ms (RTF {wall / seconds:.4f})  CPU {cpu * 1000:7.1f} ms "
            f"(RTF {cpu / seconds:.4f}, {100 * (cpu / base_cpu - 1):+.1f}%)"
        )
    return chunks


async def bench_first_bytes(synth: PiperSynthesizer, reps: int) -> None:
    """What encoding adds to time to first audio, measured where it happens: the first encoded slice of the
    first sentence (container header included), against the synthesis of that sentence."""
    print(f"\n2a. Encoding's share of time to first audio (in process), median of {reps}")
    sentence = STREAM_TEXT.split(". ")[0] + "."
    runs = [(await _synth(synth, sentence, False))[0][0] for _ in range(reps)]  # generation_s: wall
    first = runs[0]
    synth_s = statistics.median(c.generation_s for c in runs)
    step = int(ENCODE_SLICE_S * RATE) * 2
    print(
        f"first sentence synthesized in {synth_s * 1000:.1f} ms ({len(first.pcm) / 2 / RATE:.2f} s of audio)"
    )
    print(f"{'format':7} {'first slice ms':>15} {'+TTFA':>7}")
    for fmt in FORMATS:
        times = []
        for _ in range(reps):
            t0 = time.process_time()
            enc = StreamEncoder(fmt, RATE)
            enc.write(first.pcm[:step])
            times.append(time.process_time() - t0)
            enc.close()
        t = statistics.median(times)
        print(f"{fmt:7} {t * 1000:15.2f} {100 * t / synth_s:+6.1f}%")


def bench_normalization(reps: int) -> None:
    text = TEXT * 20
    best = min(_timed(lambda: normalize(text)) for _ in range(reps))
    print(
        f"\n4. Normalization: {len(text)} chars in {best * 1000:.1f} ms = "
        f"{best / len(text) * 1e6:.2f} us/char"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--skip-server", action="store_true", help="leave out the HTTP time-to-first-audio part"
    )
    parser.add_argument("--only-ttfa", action="store_true", help="only the HTTP time-to-first-audio part")
    args = parser.parse_args()
    if args.only_ttfa:
        bench_ttfa(args.reps)
        return
    synth = PiperSynthesizer(RATE, ThreadPoolExecutor(max_workers=2))
    await synth.start()
    chunks = await bench_timings(synth, args.reps)
    bench_encoding(chunks, args.reps)
    await bench_first_bytes(synth, args.reps)
    bench_normalization(args.reps)
    await synth.aclose()
    if not args.skip_server:
        bench_ttfa(args.reps)


if __name__ == "__main__":
    asyncio.run(main())
