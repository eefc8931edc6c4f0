"""WS /read/stream benchmark on the embedded engine: time to first audio and concurrent real-time streams.

    python bench/read_stream_bench.py [--runs 9] [--background 4] [--max-streams 64] [--budget-s 240]

Prints:
  * time to first audio (TTFA: `start` sent -> first PCM frame received) for a ~2,000-word text and for a
    one-sentence text, medians over alternating runs, and their ratio (goal <= 1.2: a long text must not
    delay the first sound);
  * the same one-sentence TTFA while --background streams read long texts on the server, and its ratio
    to the idle figure (a busy server must still start speaking at once);
  * for 1, 2, 4, 8, ... simultaneous streams, whether every stream keeps real time: playback starts when
    its first frame arrives, and no later frame may arrive after the moment it is due to play
    (`late_ms` is the worst lateness; `x_rt` the audio seconds received per wall second after the first
    frame). The largest count where all streams keep up is the concurrency figure.

One real server process (`python -m gateway serve`), real WebSocket clients in this process; the
clients' own CPU use counts against the machine, as it would for a co-located proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ServerProcess

RATE = 24000
ONE_SENTENCE = "The library opens at nine in the morning and closes late in the evening."
_BODY = [
    "Readers arrive early to find a quiet table near the tall windows.",
    "Some of them bring laptops, while others prefer old paper notebooks and a pencil.",
    "The staff keep the reading rooms calm, and they answer questions in a low voice.",
    "On the third floor there is a collection of maps that few visitors ever see.",
    "Each map shows how the city grew, street by street, over more than two hundred years.",
    "Children come in the afternoon for stories, songs and a little bit of noise.",
    "In winter the building stays warm, so many people simply come to sit and think.",
    "Volunteers repair damaged books in a small workshop behind the main desk.",
    "Their tools are simple: glue, thread, a bone folder and a great deal of patience.",
    "When a book returns to the shelf, it is ready for another fifty years of readers.",
]


def long_text(words: int = 2000) -> str:
    sentences = [ONE_SENTENCE]
    i = 0
    while sum(len(s.split()) for s in sentences) < words:
        sentences.append(_BODY[i % len(_BODY)])
        i += 1
    return " ".join(sentences)


@dataclass
class StreamResult:
    ttfa: float  # seconds from `start` to the first audio frame
    arrivals: list[tuple[float, int]]  # (arrival time relative to start, samples in the frame)
    complete: bool

    @property
    def audio_s(self) -> float:
        return sum(n for _, n in self.arrivals) / RATE

    def lateness(self) -> float:
        """Worst lateness of a frame against playback that starts at the first frame, seconds."""
        if not self.arrivals:
            return float("inf")
        t0 = self.arrivals[0][0]
        played = 0
        worst = 0.0
        for t, n in self.arrivals:
            worst = max(worst, (t - t0) - played / RATE)
            played += n
        return worst

    def speed(self) -> float:
        if len(self.arrivals) < 2:
            return float("inf")
        span = self.arrivals[-1][0] - self.arrivals[0][0]
        return self.audio_s / span if span > 0 else float("inf")


async def one_stream(url: str, text: str, stop_after_first: bool = False) -> StreamResult:
    async with websockets.connect(url + "/read/stream", max_size=None) as ws:
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "start", "text": text}))
        arrivals: list[tuple[float, int]] = []
        ttfa = float("inf")
        while True:
            message = await ws.recv()
            now = time.perf_counter() - t0
            if isinstance(message, bytes):
                if not arrivals:
                    ttfa = now
                arrivals.append((now, len(message) // 2))
                if stop_after_first:
                    await ws.send('{"type":"cancel"}')
                    stop_after_first = False
                continue
            event = json.loads(message)
            if event["type"] in ("complete", "cancelled"):
                return StreamResult(ttfa, arrivals, event["type"] == "complete")
            if event["type"] == "error":
                raise RuntimeError(f"stream error: {event}")


async def measure_ttfa(url: str, runs: int) -> tuple[list[float], list[float]]:
    short, long_ = [], []
    text = long_text()
    for _ in range(runs):  # alternate so that load changes on the machine hit both alike
        for sample, cancel, out in ((ONE_SENTENCE, False, short), (text, True, long_)):
            out.append((await one_stream(url, sample, stop_after_first=cancel)).ttfa)
            # A cancelled stream's sentence in flight still finishes in its worker thread: let it, so
            # that it does not slow down the next measurement.
            await asyncio.sleep(max(0.5, 3 * out[-1]))
    return short, long_


async def background_reader(url: str, text: str, first_audio: asyncio.Event, stop: asyncio.Event) -> None:
    """A listener reading a long text and taking audio as fast as it comes, until told to stop."""
    async with websockets.connect(url + "/read/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "text": text}))
        while not stop.is_set():
            try:
                async with asyncio.timeout(0.2):
                    message = await ws.recv()
            except TimeoutError:
                continue
            if isinstance(message, bytes):
                first_audio.set()
            elif json.loads(message)["type"] in ("complete", "error"):
                await ws.send(json.dumps({"type": "start", "text": text}))  # keep the load on


async def measure_newcomer(url: str, background: int, runs: int) -> list[float]:
    """TTFA of a one-sentence stream while `background` streams read long texts on the same server."""
    stop = asyncio.Event()
    started = [asyncio.Event() for _ in range(background)]
    text = long_text()
    readers = [asyncio.create_task(background_reader(url, text, e, stop)) for e in started]
    try:
        await asyncio.gather(*(e.wait() for e in started))
        ttfas = []
        for _ in range(runs):
            ttfas.append((await one_stream(url, ONE_SENTENCE)).ttfa)
            await asyncio.sleep(0.3)
        return ttfas
    finally:
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)


async def measure_concurrency(url: str, max_streams: int, deadline: float) -> list[tuple[int, bool, str]]:
    # About 25 s of audio per stream: long enough that synthesis, not start-up, decides.
    text = " ".join([ONE_SENTENCE, *_BODY[:6]])
    rows: list[tuple[int, bool, str]] = []
    n = 1
    while n <= max_streams and time.monotonic() < deadline:
        results = await asyncio.gather(*(one_stream(url, text) for _ in range(n)))
        worst = max(r.lateness() for r in results)
        ok = all(r.complete for r in results) and worst <= 0.0
        slowest = min(r.speed() for r in results)
        ttfa = statistics.median(r.ttfa for r in results)
        rows.append(
            (
                n,
                ok,
                f"late_ms={worst * 1000:7.1f}  slowest x_rt={slowest:6.1f}  median TTFA={ttfa * 1000:7.1f} ms"
                f"  audio/stream={results[0].audio_s:5.1f} s",
            )
        )
        print(f"  {n:3d} streams: {'real time' if ok else 'FALLS BEHIND'}  {rows[-1][2]}", flush=True)
        if not ok:
            break
        n *= 2
    return rows


async def refine(url: str, rows: list[tuple[int, bool, str]], deadline: float) -> list[tuple[int, bool, str]]:
    """Bisect between the last count that kept up and the first that did not, while time allows."""
    good = max((n for n, ok, _ in rows if ok), default=0)
    bad = min((n for n, ok, _ in rows if not ok), default=0)
    text = " ".join([ONE_SENTENCE, *_BODY[:6]])
    while bad and bad - good > 1 and time.monotonic() < deadline:
        n = (good + bad) // 2
        results = await asyncio.gather(*(one_stream(url, text) for _ in range(n)))
        worst = max(r.lateness() for r in results)
        ok = all(r.complete for r in results) and worst <= 0.0
        detail = f"late_ms={worst * 1000:7.1f}  slowest x_rt={min(r.speed() for r in results):6.1f}"
        rows.append((n, ok, detail))
        print(f"  {n:3d} streams: {'real time' if ok else 'FALLS BEHIND'}  {detail}", flush=True)
        good, bad = (n, bad) if ok else (good, n)
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--max-streams", type=int, default=64)
    parser.add_argument("--background", type=int, default=4, help="streams running during the newcomer test")
    parser.add_argument("--budget-s", type=float, default=240.0, help="stop adding streams after this")
    parser.add_argument("--no-concurrency", action="store_true", help="skip the concurrent-streams part")
    args = parser.parse_args()

    server = ServerProcess("serve", env={"LOG_LEVEL": "warning"})
    try:
        server.wait_ready()
        started = time.monotonic()
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
        await one_stream(server.ws_url, ONE_SENTENCE)  # warm the connection path
        text = long_text()
        print(f"texts: one sentence ({len(ONE_SENTENCE.split())} words); long ({len(text.split())} words)")

        short, long_ = await measure_ttfa(server.ws_url, args.runs)
        s_med, l_med = statistics.median(short), statistics.median(long_)
        print("time to first audio (median of", args.runs, "alternating runs):")
        print(
            f"  one sentence : {s_med * 1000:7.1f} ms   (runs: {', '.join(f'{x * 1000:.0f}' for x in short)})"
        )
        print(
            f"  2,000 words  : {l_med * 1000:7.1f} ms   (runs: {', '.join(f'{x * 1000:.0f}' for x in long_)})"
        )
        print(f"  ratio long/short: {l_med / s_med:.2f}  (goal <= 1.2)")

        ttfas = await measure_newcomer(server.ws_url, args.background, args.runs)
        n_med = statistics.median(ttfas)
        print(f"time to first audio of a new stream while {args.background} streams read 2,000-word texts:")
        print(f"  {n_med * 1000:7.1f} ms   (runs: {', '.join(f'{x * 1000:.0f}' for x in ttfas)})")
        print(f"  ratio to the idle server: {n_med / s_med:.2f}")

        if not args.no_concurrency:
            print("concurrent streams (each must receive audio faster than it plays):")
            rows = await measure_concurrency(server.ws_url, args.max_streams, started + args.budget_s)
            rows = await refine(server.ws_url, rows, started + args.budget_s)
            keeping = max((n for n, ok, _ in rows if ok), default=0)
            capped = all(ok for _, ok, _ in rows)
            print(
                f"  streams keeping real time: {keeping}{'+' if capped else ''}"
                f"{' (stopped at the cap or the time budget)' if capped else ''}"
            )
        print(f"load average at end {os.getloadavg()[0]:.2f}; wall {time.monotonic() - started:.0f} s")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
