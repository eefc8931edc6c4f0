"""WS /v1/realtime against WS /voice on the same server, same engines, same questions, in one run.

Per turn: a spoken question (made by the gateway's TTS) is streamed at real-time pace in 20 ms frames, then
silence keeps flowing until the reply starts; server VAD (silence_duration_ms 500 on both) ends the turn.

  - speech end -> first reply audio: the last speech frame sent -> the first `response.output_audio.delta`
    (Realtime) or first binary audio frame (/voice). p50 / p95, and the Realtime/voice ratio (goal: within
    5 %).
  - cancel -> last delta: 300 ms into the reply the client cancels (`response.cancel` / `interrupt`);
    the time until the last audio that still arrives, and how much audio that was.

Turns alternate between the protocols (and which goes first), so load from anything else on the machine
falls on both alike.

    python bench/realtime_bench.py [--rounds 2] [--questions 4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.gateway.voice_client import FRAME_BYTES, QUESTIONS, RATE, silence, spoken
from tests.support import ServerProcess

LISTEN_BEFORE_CANCEL_S = 0.3
WAIT_S = 120


@dataclass
class Turn:
    first_audio_s: float
    cancel_to_last_s: float
    audio_after_cancel_ms: float
    cancel_to_done_s: float
    timings: dict[str, Any]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


class Protocol:
    name = ""

    async def connect(self, server: ServerProcess) -> None: ...

    async def send_audio(self, pcm: bytes) -> None: ...

    async def cancel(self) -> None: ...

    async def recv(self) -> tuple[str, Any]:
        """("audio", nbytes) | ("done", event) | ("other", event)"""
        raise NotImplementedError

    async def close(self) -> None:
        await self.ws.close()

    ws: Any


class Realtime(Protocol):
    name = "/v1/realtime"

    async def connect(self, server: ServerProcess) -> None:
        self.ws = await websockets.connect(f"{server.ws_url}/v1/realtime?model=gpt-realtime", max_size=None)
        assert json.loads(await self.ws.recv())["type"] == "session.created"
        session = {
            "type": "realtime",
            "audio": {
                "input": {
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            },
        }
        await self.ws.send(json.dumps({"type": "session.update", "session": session}))
        while json.loads(await self.ws.recv())["type"] != "session.updated":
            pass

    async def send_audio(self, pcm: bytes) -> None:
        audio = base64.b64encode(pcm).decode()
        await self.ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

    async def cancel(self) -> None:
        await self.ws.send(json.dumps({"type": "response.cancel"}))

    async def recv(self) -> tuple[str, Any]:
        event = json.loads(await self.ws.recv())
        kind = event["type"]
        if kind == "response.output_audio.delta":
            return "audio", len(base64.b64decode(event["delta"]))
        if kind == "response.done":
            return "done", event
        if kind == "error":
            raise RuntimeError(event)
        return "other", event


class Voice(Protocol):
    name = "/voice"

    async def connect(self, server: ServerProcess) -> None:
        self.ws = await websockets.connect(f"{server.ws_url}/voice", max_size=None)
        assert json.loads(await self.ws.recv())["type"] == "session.created"
        update = {"type": "session.update", "session": {"turn_detection": {"silence_duration_ms": 500}}}
        await self.ws.send(json.dumps(update))
        while json.loads(await self.ws.recv())["type"] != "session.updated":
            pass

    async def send_audio(self, pcm: bytes) -> None:
        await self.ws.send(pcm)

    async def cancel(self) -> None:
        await self.ws.send(json.dumps({"type": "interrupt"}))

    async def recv(self) -> tuple[str, Any]:
        message = await self.ws.recv()
        if isinstance(message, bytes):
            return "audio", len(message)
        event = json.loads(message)
        if event["type"] == "response.done":
            return "done", event
        if event["type"] == "error":
            raise RuntimeError(event)
        return "other", event


async def turn(proto: Protocol, pcm: bytes) -> Turn:
    start = time.perf_counter()
    for i in range(0, len(pcm), FRAME_BYTES):
        await proto.send_audio(pcm[i : i + FRAME_BYTES])
        await asyncio.sleep(max(0.0, start + (i + FRAME_BYTES) / (2 * RATE) - time.perf_counter()))
    end_of_speech = time.perf_counter()
    quiet = silence(0.02)

    async def keep_quiet() -> None:  # a live microphone keeps sending after the user stops talking
        while True:
            await proto.send_audio(quiet)
            await asyncio.sleep(0.02)

    talker = asyncio.create_task(keep_quiet())
    first: float | None = None
    cancelled_at: float | None = None
    last_audio = 0.0
    after_cancel = 0
    try:
        while True:
            timeout = WAIT_S
            if first is not None and cancelled_at is None:
                timeout = max(0.0, first + LISTEN_BEFORE_CANCEL_S - time.perf_counter())
            try:
                kind, value = await asyncio.wait_for(proto.recv(), timeout)
            except TimeoutError:
                if first is None:
                    raise
                cancelled_at = time.perf_counter()
                await proto.cancel()
                continue
            now = time.perf_counter()
            if kind == "audio":
                if first is None:
                    first = now
                last_audio = now
                if cancelled_at is not None:
                    after_cancel += value
            elif kind == "done":
                event, done_at = value, now
                break
    finally:
        talker.cancel()
    assert first is not None
    if cancelled_at is None:  # the reply ended before the cancel was due
        cancelled_at = last_audio
    return Turn(
        first_audio_s=first - end_of_speech,
        cancel_to_last_s=max(0.0, last_audio - cancelled_at),
        audio_after_cancel_ms=after_cancel / 2 / RATE * 1000,
        cancel_to_done_s=max(0.0, done_at - cancelled_at),
        timings=event.get("timings") or {},
    )


async def run(server: ServerProcess, questions: list[bytes], rounds: int) -> dict[str, list[Turn]]:
    results: dict[str, list[Turn]] = {"/v1/realtime": [], "/voice": []}
    for r in range(rounds):
        protos: list[Protocol] = [Realtime(), Voice()]
        for p in protos:
            await p.connect(server)
            if r == 0:
                await turn(p, questions[0])  # warm-up, not counted: first-use costs are not latency
        try:
            for q, pcm in enumerate(questions):
                order = protos if (r + q) % 2 == 0 else protos[::-1]
                for p in order:
                    results[p.name].append(await turn(p, pcm))
                    await asyncio.sleep(0.3)  # let the cancelled reply's tail settle
        finally:
            for p in protos:
                await p.close()
    return results


def med(turns: list[Turn], key: str) -> float:
    values = [t.timings[key] for t in turns if t.timings.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def report(results: dict[str, list[Turn]]) -> None:
    print(
        f"{'':16s} {'turns':>5s} {'first audio p50':>16s} {'p95':>8s} {'server p50':>11s}"
        f" {'cancel->last p50':>17s} {'p95':>8s} {'audio after cancel p50':>23s}"
    )
    p50s = {}
    for name, turns in results.items():
        firsts = [t.first_audio_s * 1000 for t in turns]
        cancels = [t.cancel_to_last_s * 1000 for t in turns]
        after = [t.audio_after_cancel_ms for t in turns]
        p50s[name] = statistics.median(firsts)
        print(
            f"{name:16s} {len(turns):5d} {p50s[name]:13.0f} ms {pct(firsts, 95):5.0f} ms"
            f" {med(turns, 'first_audio_ms'):8.0f} ms"
            f" {statistics.median(cancels):14.0f} ms {pct(cancels, 95):5.0f} ms"
            f" {statistics.median(after):20.0f} ms"
        )
    print(
        "server-side stages (p50): commit -> first audio = ASR + LLM first sentence + TTS first chunk + rest"
    )
    for name, turns in results.items():
        dones = [t.cancel_to_done_s * 1000 for t in turns]
        print(
            f"  {name:14s} ASR {med(turns, 'asr_ms'):5.0f} ms   LLM first sentence"
            f" {med(turns, 'llm_first_sentence_ms'):5.0f} ms   TTS first chunk"
            f" {med(turns, 'tts_first_chunk_ms'):5.0f} ms   cancel -> response.done p50"
            f" {statistics.median(dones):4.0f} ms"
        )
    ratio = p50s["/v1/realtime"] / p50s["/voice"]
    verdict = "met" if ratio <= 1.05 else "NOT met"
    print(f"speech end -> first audio, realtime / voice (p50): {ratio:.3f}  (goal <= 1.05: {verdict})")
    # Turns run in pairs (same question, back to back), so a pair shares the machine's load of the moment.
    pairs = [
        r.first_audio_s / v.first_audio_s
        for r, v in zip(results["/v1/realtime"], results["/voice"], strict=True)
    ]
    print(
        f"paired (same question, back to back): median realtime/voice {statistics.median(pairs):.3f}, "
        f"realtime faster in {sum(p < 1 for p in pairs)} of {len(pairs)} pairs"
    )
    print("first audio includes silence_duration_ms=500 of server VAD on both protocols")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2, help="passes over the questions (fresh connections)")
    parser.add_argument(
        "--questions", type=int, default=4, help=f"how many of the {len(QUESTIONS)} questions"
    )
    args = parser.parse_args()
    server = ServerProcess("serve")
    try:
        server.wait_ready()
        questions = [spoken(server.url, q) for q in QUESTIONS[: args.questions]]
        results = asyncio.run(run(server, questions, args.rounds))
    finally:
        server.stop()
    print(
        f"embedded engine, {args.rounds} rounds x {len(questions)} questions per protocol, turns interleaved"
    )
    report(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
