"""Load: N concurrent /read/stream and /voice sessions from one client process against a real gateway on
127.0.0.1, bounded in count and time.

Per phase it reports sessions completed, sessions held in real time (every audio frame arrived before the
moment a player, started at the first frame with a 300 ms jitter buffer, would need it), p50/p95
latencies (read: start -> first audio; voice: commit -> first reply audio), the gateway's peak RSS (sampled
from /proc) and RSS growth per session. Ratios are against the single-session phase of the same run.
A last phase holds MAX_STREAMS open sessions plus a few more: exactly the excess must be refused (1013).

    python bench/load_bench.py [--read 1,4,8,16,32] [--voice 1,2,4] [--hold 48] [--time-limit 900]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import ServerProcess

READ_TEXT = (
    "The reader streams each sentence as soon as it is ready. Listeners hear the first words almost at once."
)
QUESTION = "What is the capital of France?"
JITTER_S = 0.3
SESSION_TIMEOUT = 240.0
MAX_STREAMS = 48


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kib(self.pid))
            await asyncio.sleep(0.05)

    def __enter__(self) -> RssSampler:
        self.peak = rss_kib(self.pid)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


@dataclass
class Timing:
    """Frames checked against a player that starts at the first frame plus a jitter buffer."""

    sample_rate: int = 24000
    first: float | None = None
    samples: int = 0
    late_frames: int = 0
    worst_late_s: float = 0.0

    def frame(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        due = self.first + JITTER_S + self.samples / self.sample_rate
        if now > due:
            self.late_frames += 1
            self.worst_late_s = max(self.worst_late_s, now - due)
        self.samples += len(data) // 2


@dataclass
class SessionResult:
    ok: bool
    latency_s: float = 0.0
    audio_s: float = 0.0
    realtime: bool = False
    worst_late_s: float = 0.0
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


async def read_session(ws_url: str) -> SessionResult:
    t0 = time.perf_counter()
    try:
        async with connect(ws_url + "/read/stream", max_size=None, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "start", "text": READ_TEXT}))
            timing = Timing()
            while True:
                message = await asyncio.wait_for(ws.recv(), SESSION_TIMEOUT)
                if isinstance(message, bytes):
                    timing.frame(message)
                    continue
                event = json.loads(message)
                if event["type"] == "started":
                    timing.sample_rate = event["sample_rate"]
                elif event["type"] == "complete":
                    break
                elif event["type"] == "error":
                    return SessionResult(False, error=event.get("code", "?"))
    except (ConnectionClosed, OSError, TimeoutError) as exc:
        return SessionResult(
            False, error=type(exc).__name__ + (f" {exc.rcvd.code}" if getattr(exc, "rcvd", None) else "")
        )
    assert timing.first is not None
    return SessionResult(
        True,
        latency_s=timing.first - t0,
        audio_s=timing.samples / timing.sample_rate,
        realtime=timing.late_frames == 0,
        worst_late_s=timing.worst_late_s,
    )


async def _expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(ws.recv(), SESSION_TIMEOUT)
        if isinstance(message, bytes):
            continue
        event = json.loads(message)
        if event["type"] == kind:
            return event
        if event["type"] == "error":
            raise RuntimeError(event.get("code", "?"))


async def voice_session(ws_url: str, question_pcm: bytes) -> SessionResult:
    try:
        async with connect(ws_url + "/voice", max_size=None, open_timeout=60) as ws:
            created = await _expect(ws, "session.created")
            rate = created["session"].get("output_audio", {}).get("sample_rate", 24000)
            await ws.send(
                json.dumps(
                    {"type": "session.update", "session": {"turn_detection": None, "max_response_tokens": 24}}
                )
            )
            await _expect(ws, "session.updated")
            for i in range(0, len(question_pcm), 960):
                await ws.send(question_pcm[i : i + 960])
            t_commit = time.perf_counter()
            await ws.send(json.dumps({"type": "audio.commit"}))
            timing = Timing(sample_rate=rate)
            transcript = ""
            while True:
                message = await asyncio.wait_for(ws.recv(), SESSION_TIMEOUT)
                if isinstance(message, bytes):
                    timing.frame(message)
                    continue
                event = json.loads(message)
                if event["type"] == "transcript":
                    transcript = event["text"]
                elif event["type"] == "error":
                    return SessionResult(False, error=event.get("code", "?"))
                elif event["type"] == "response.done":
                    break
    except (ConnectionClosed, OSError, TimeoutError, RuntimeError) as exc:
        return SessionResult(False, error=f"{type(exc).__name__} {exc}"[:80])
    if timing.first is None:
        return SessionResult(False, error="no reply audio")
    return SessionResult(
        True,
        latency_s=timing.first - t_commit,
        audio_s=timing.samples / timing.sample_rate,
        realtime=timing.late_frames == 0,
        worst_late_s=timing.worst_late_s,
        extra={"transcript": transcript, "status": event.get("status"), "timings": event.get("timings", {})},
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Phase:
    name: str
    n: int
    results: list[SessionResult]
    seconds: float
    rss_before_kib: int
    rss_peak_kib: int

    @property
    def ok(self) -> list[SessionResult]:
        return [r for r in self.results if r.ok]

    def line(self, base_p95: float | None) -> str:
        lat = [r.latency_s for r in self.ok]
        p95 = pct(lat, 0.95)
        held = sum(r.realtime for r in self.ok)
        growth = (self.rss_peak_kib - self.rss_before_kib) / 1024 / max(self.n, 1)
        ratio = f"{p95 / base_p95:5.2f}x" if base_p95 else "  -  "
        errors = sorted({r.error for r in self.results if not r.ok})
        return (
            f"{self.name:6s} N={self.n:3d}  done {len(self.ok):3d}/{self.n:<3d} real-time {held:3d}  "
            f"p50 {pct(lat, 0.5) * 1000:7.0f} ms  p95 {p95 * 1000:7.0f} ms ({ratio})  "
            f"worst late {max((r.worst_late_s for r in self.ok), default=0) * 1000:6.0f} ms  "
            f"RSS {self.rss_before_kib / 1024:6.0f} -> peak {self.rss_peak_kib / 1024:6.0f} MiB "
            f"(+{growth:5.1f} MiB/session)  {self.seconds:5.1f} s" + (f"  errors {errors}" if errors else "")
        )


async def run_phase(name: str, n: int, pid: int, factory: Any) -> Phase:
    before = rss_kib(pid)
    t0 = time.perf_counter()
    with RssSampler(pid) as sampler:
        results = await asyncio.gather(*(factory() for _ in range(n)))
    return Phase(name, n, list(results), time.perf_counter() - t0, before, sampler.peak)


async def hold_phase(ws_url: str, pid: int, count: int, extra: int) -> str:
    """Open `count` sessions (the limit) and keep them; then `extra` more must be refused with 1013."""
    before = rss_kib(pid)
    held: list[ClientConnection] = []
    try:
        for _ in range(count):
            ws = await connect(ws_url + "/read/stream", open_timeout=60)
            await ws.send(json.dumps({"type": "ping"}))
            await asyncio.wait_for(ws.recv(), 30)
            held.append(ws)
        rss_held = rss_kib(pid)
        refused, accepted = 0, 0
        for _ in range(extra):
            async with connect(ws_url + "/read/stream", open_timeout=60) as ws:
                try:
                    await ws.send(json.dumps({"type": "ping"}))
                    await asyncio.wait_for(ws.recv(), 30)
                    await asyncio.wait_for(ws.recv(), 30)
                    accepted += 1
                except ConnectionClosed as exc:
                    refused += int(exc.rcvd is not None and exc.rcvd.code == 1013)
        alive = 0
        for ws in held:
            await ws.send(json.dumps({"type": "ping"}))
            alive += json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "pong"
    finally:
        await asyncio.gather(*(ws.close() for ws in held), return_exceptions=True)
    per = (rss_held - before) / 1024 / max(count, 1)
    return (
        f"hold   N={count:3d}  all held alive {alive}/{count}; {extra} over the limit: "
        f"refused 1013 {refused}, accepted {accepted}; "
        f"RSS {before / 1024:.0f} -> {rss_held / 1024:.0f} MiB ({per * 1024:.0f} KiB per open session)"
    )


async def main_async(args: argparse.Namespace) -> int:
    server = ServerProcess(
        "serve",
        env={
            "LOG_LEVEL": "warning",
            "MAX_STREAMS": str(args.hold),
            "MAX_VOICE_SESSIONS": str(max(args.voice or [1])),
        },
    )
    deadline = time.monotonic() + args.time_limit
    failures = 0
    try:
        await asyncio.to_thread(server.wait_ready)
        pid = server.proc.pid
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            question = (await http.post("/read", json={"text": QUESTION, "response_format": "pcm"})).content
        print(f"gateway pid {pid}, idle RSS {rss_kib(pid) / 1024:.0f} MiB; read text {len(READ_TEXT)} chars")
        base: dict[str, float] = {}
        for name, counts, factory in (
            ("read", args.read, lambda: read_session(server.ws_url)),
            ("voice", args.voice, lambda: voice_session(server.ws_url, question)),
        ):
            for n in counts:
                if time.monotonic() > deadline:
                    print(f"{name} N={n}: skipped, time limit reached")
                    continue
                phase = await run_phase(name, n, pid, factory)
                lat = [r.latency_s for r in phase.ok]
                base.setdefault(name, pct(lat, 0.95) if lat else 0.0)
                print(phase.line(base[name]), flush=True)
                failures += n - len(phase.ok)
        if time.monotonic() < deadline:
            print(await hold_phase(server.ws_url, pid, args.hold, 4), flush=True)
        status = (await asyncio.to_thread(httpx.get, server.url + "/health")).status_code
        print(f"after load: /health {status}, RSS {rss_kib(pid) / 1024:.0f} MiB")
    finally:
        server.stop()
    print(f"sessions failed below the limit: {failures}")
    return 0 if failures == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--read", type=ints, default=[1, 4, 8, 16, 32])
    parser.add_argument("--voice", type=ints, default=[1, 2, 4])
    parser.add_argument("--hold", type=int, default=MAX_STREAMS, help="MAX_STREAMS of the gateway under test")
    parser.add_argument("--time-limit", type=float, default=900.0)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
