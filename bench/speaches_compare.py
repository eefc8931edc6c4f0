"""The gateway's embedded engine side by side with a running Speaches server (issue 21): same inputs, same
models, requests interleaved (gateway, Speaches, Speaches, gateway, ...) so the machine's load falls on both.

The gateway is started here (embedded engine, `python -m gateway serve` on a free loopback port). Speaches is
not: it must already run at --speaches-url with the same models in its Hugging Face cache (Whisper base as
CTranslate2, the Piper voice en_US-joe-medium as a `piper-*` repo, SmolLM2-135M behind an OpenAI-compatible
chat server such as `python -m llama_cpp.server`); bench/README.md says how it was set up. This script only
talks to it over HTTP and WebSocket.

Rows (p50 / p95 over all measured requests; warm-up requests first, not counted):
  - short-file ASR: POST /v1/audio/transcriptions, a few sentences spoken by the gateway's POST /read (WAV,
    24 kHz), wall time and WER against the text read;
  - long-file ASR: the same with whole sentences joined to about --long-seconds (29 s);
  - streamed TTS: POST /v1/audio/speech, response_format pcm, time to the first audio byte and to the last;
  - realtime: WS /v1/realtime, a spoken question streamed at real-time pace then silence, server VAD
    (silence_duration_ms 500 on both): last speech frame -> first response audio delta. Frames are 100 ms
    (--frame-ms): Speaches runs its VAD on every append, and with 20 ms frames it signalled the end of one
    turn dozens of times, transcribed each duplicate commit and answered nothing within a minute on this
    machine. Each side uses its own system prompt, or with --align-prompt both the gateway's instructions
    and temperature;
  - memory: RSS of each process tree (the gateway with its worker processes; Speaches, and its chat server
    when --chat-url is given) after start-up and after the run.

    python bench/speaches_compare.py --speaches-url http://127.0.0.1:8010 [--chat-url http://127.0.0.1:8011]
        [--speaches-pid PID] [--rounds 5] [--realtime-rounds 2] [--align-prompt] [--skip asr tts realtime]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.long_asr_bench import PROSE
from gateway.audio.pcm import wav_bytes
from gateway.sessions.voice.config import DEFAULT_INSTRUCTIONS
from gateway.settings import load_settings
from tests.gateway.voice_client import QUESTIONS, RATE, silence, spoken
from tests.support import ServerProcess, wer

MIB = 2**20
TIMEOUT_S = 120.0  # one request on a loaded 2-core machine; never reached when things work
RT_TIMEOUT_S = 60.0  # one realtime turn; a server that has not answered by then fails the row
LISTEN_S = 0.3  # reply audio taken before the turn is cancelled: the first delta is what is measured
TTS_TEXT = (
    "The lighthouse stood at the end of a long stone pier, and every evening the keeper climbed its narrow "
    "stairs to light the lamp. He had done this for many years."
)


@dataclass
class Side:
    """One server under test and how its OpenAI-compatible routes are called."""

    name: str
    url: str
    asr_model: str
    tts_model: str
    voice: str
    realtime_model: str
    tts_rate: int  # sample rate of its response_format=pcm
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # row -> (reference, hypothesis)
    failed: dict[str, str] = field(default_factory=dict)  # row -> why it could not run

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    def add(self, row: str, value: float) -> None:
        self.samples.setdefault(row, []).append(value)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def tree_rss_mib(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that exited meanwhile holds nothing
            total += p.memory_info().rss
    return total / MIB


def pid_on_port(url: str) -> int | None:
    """The process listening on `url`'s port (other users' sockets are visible to root or their owner)."""
    port = urlparse(url).port
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return conn.pid
    return None


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


# --- ASR ---------------------------------------------------------------------------------------------------


def transcribe(client: httpx.Client, side: Side, wav: bytes) -> tuple[float, str]:
    files = {"file": ("speech.wav", wav, "audio/wav")}
    data = {"model": side.asr_model, "language": "en", "response_format": "json"}
    t0 = time.perf_counter()
    r = client.post(f"{side.url}/v1/audio/transcriptions", files=files, data=data, timeout=TIMEOUT_S)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    return elapsed, str(r.json()["text"])


def asr_rows(sides: list[Side], row: str, clips: list[tuple[str, bytes]], rounds: int) -> None:
    with httpx.Client() as client:
        for side in sides:  # warm-up: Speaches loads its models on first use
            try:
                transcribe(client, side, clips[0][1])
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                side.failed[row] = f"{type(exc).__name__}: {exc}"[:200]
        live = [s for s in sides if row not in s.failed]
        for r in range(rounds):
            for c, (text, wav) in enumerate(clips):
                order = live if (r + c) % 2 == 0 else live[::-1]
                for side in order:
                    elapsed, hyp = transcribe(client, side, wav)
                    side.add(row, elapsed * 1000)
                    side.errors.setdefault(row, []).append((text, hyp))


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    """Word errors over all reference words (each clip weighted by its length)."""
    words = [len(ref.split()) for ref, _ in pairs]
    return sum(wer(ref, hyp) * n for (ref, hyp), n in zip(pairs, words, strict=True)) / max(1, sum(words))


# --- streamed TTS ------------------------------------------------------------------------------------------


def speak(client: httpx.Client, side: Side) -> tuple[float, float, int]:
    body = {"model": side.tts_model, "voice": side.voice, "input": TTS_TEXT, "response_format": "pcm"}
    t0 = time.perf_counter()
    first: float | None = None
    size = 0
    with client.stream("POST", f"{side.url}/v1/audio/speech", json=body, timeout=TIMEOUT_S) as r:
        r.raise_for_status()
        for chunk in r.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - t0
            size += len(chunk)
    last = time.perf_counter() - t0
    if first is None:
        raise ValueError("no audio in the response")
    return first, last, size


def tts_rows(sides: list[Side], rounds: int) -> dict[str, float]:
    audio_s: dict[str, float] = {}
    with httpx.Client() as client:
        for side in sides:
            try:
                speak(client, side)
            except (httpx.HTTPError, ValueError) as exc:
                why = f"{type(exc).__name__}: {exc}"[:200]
                side.failed["tts first byte"] = side.failed["tts last byte"] = why
        live = [s for s in sides if "tts first byte" not in s.failed]
        for r in range(rounds):
            for side in live if r % 2 == 0 else live[::-1]:
                first, last, size = speak(client, side)
                side.add("tts first byte", first * 1000)
                side.add("tts last byte", last * 1000)
                audio_s[side.name] = size / 2 / side.tts_rate
    return audio_s


# --- realtime ----------------------------------------------------------------------------------------------

AUDIO_DELTAS = {"response.output_audio.delta", "response.audio.delta"}  # GA name, beta name (Speaches)


async def rt_connect(side: Side, aligned: dict[str, Any]) -> Any:
    # No client keepalive: a server whose event loop is busy (Speaches runs its VAD on the loop) would be
    # disconnected for a late pong, and the turn's own bound already limits the wait.
    url = f"{side.ws_url}/v1/realtime?{side.realtime_model}"
    ws = await websockets.connect(url, max_size=None, ping_interval=None)
    created = json.loads(await ws.recv())
    if created["type"] != "session.created":
        raise RuntimeError(f"expected session.created, got {created}")
    if side.name == "gateway":
        session: dict[str, Any] = {
            "type": "realtime",
            "audio": {
                "input": {
                    "transcription": {"model": side.asr_model},
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                }
            },
        }
    else:  # Speaches' session fields (its speaches.types.realtime.PartialSession: beta layout + speech_model)
        turn = created["session"].get("turn_detection") or {}
        session = {
            "input_audio_transcription": {"model": side.asr_model, "language": "en"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": turn.get("threshold", 0.9),
                "prefix_padding_ms": turn.get("prefix_padding_ms", 0),
                "silence_duration_ms": 500,
                "create_response": True,
            },
            "speech_model": side.tts_model,
            "voice": side.voice,
            **aligned,
        }
    await ws.send(json.dumps({"type": "session.update", "session": session}))
    # Speaches answers every update that carries turn_detection (its model requires prefix_padding_ms) with
    # an `error` event, then applies the update: an error followed by session.updated is not a failure.
    errors: list[Any] = []
    while True:
        try:
            event = json.loads(await asyncio.wait_for(ws.recv(), 10 if errors else TIMEOUT_S))
        except TimeoutError:
            raise RuntimeError(f"session.update refused: {errors}") from None
        if event["type"] == "session.updated":
            return ws
        if event["type"] == "error":
            errors.append(event.get("error"))


async def rt_turn(ws: Any, pcm: bytes, frame_bytes: int, errors: list[str]) -> float:
    """Stream `pcm` at real-time pace, then silence; seconds from the last speech frame to the first delta.
    `error` events on the way are appended to `errors`."""

    async def send(chunk: bytes) -> None:
        audio = base64.b64encode(chunk).decode()
        await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": audio}))

    start = time.perf_counter()
    for i in range(0, len(pcm), frame_bytes):
        await send(pcm[i : i + frame_bytes])
        await asyncio.sleep(max(0.0, start + (i + frame_bytes) / (2 * RATE) - time.perf_counter()))
    end_of_speech = time.perf_counter()
    frame_s = frame_bytes / 2 / RATE
    quiet = silence(frame_s)

    async def keep_quiet() -> None:  # a live microphone keeps sending after the user stops talking
        while True:
            await send(quiet)
            await asyncio.sleep(frame_s)

    talker = asyncio.create_task(keep_quiet())
    first: float | None = None
    try:
        deadline = time.perf_counter() + RT_TIMEOUT_S
        while first is None:
            event = json.loads(await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.perf_counter())))
            if event["type"] in AUDIO_DELTAS:
                first = time.perf_counter() - end_of_speech
            elif event["type"] == "error":
                # Not fatal: Speaches' server VAD, run on every appended frame, can signal the end of
                # speech several times for one turn and answer the duplicate commits with errors.
                errors.append(str(event.get("error", {}).get("message", event))[:120])
        talker.cancel()
        await asyncio.sleep(LISTEN_S)
        await ws.send(json.dumps({"type": "response.cancel"}))
        # Drain until the response ends so the next turn starts on an idle server.
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), RT_TIMEOUT_S))
            if event["type"] == "response.done":
                break
    finally:
        talker.cancel()
    assert first is not None
    return first


async def realtime_rows(
    sides: list[Side], questions: list[bytes], rounds: int, frame_bytes: int, aligned: dict[str, Any]
) -> dict[str, list[str]]:
    row = "realtime first audio"
    errors: dict[str, list[str]] = {side.name: [] for side in sides}
    for r in range(rounds):
        conns: dict[str, Any] = {}
        for side in sides:
            if row in side.failed:
                continue
            try:
                conns[side.name] = await rt_connect(side, aligned)
                if r == 0:
                    await rt_turn(conns[side.name], questions[0], frame_bytes, [])  # warm-up, not counted
            except (OSError, RuntimeError, TimeoutError, websockets.WebSocketException) as exc:
                side.failed[row] = f"{type(exc).__name__}: {exc}"[:300]
                conns.pop(side.name, None)
        live = [s for s in sides if s.name in conns]
        try:
            for q, pcm in enumerate(questions):
                for side in live if (r + q) % 2 == 0 else live[::-1]:
                    if row in side.failed:
                        continue
                    try:
                        first = await rt_turn(conns[side.name], pcm, frame_bytes, errors[side.name])
                    except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                        side.failed[row] = f"{type(exc).__name__}: {exc}"[:300]
                        continue
                    side.add(row, first * 1000)
                    await asyncio.sleep(0.3)
        finally:
            for ws in conns.values():
                await ws.close()
    return errors


# --- report ------------------------------------------------------------------------------------------------


def report(gateway: Side, speaches: Side, extra: list[tuple[str, float, float]]) -> None:
    print("| row | gateway | speaches | gateway/speaches |")
    print("|---|---|---|---|")

    def line(label: str, g: float, s: float, unit: str) -> None:
        ratio = g / s if s and not np.isnan(g) and not np.isnan(s) else float("nan")
        print(f"| {label} | {g:,.0f} {unit} | {s:,.0f} {unit} | {ratio:.2f} |")

    rows = ["asr short", "asr long", "tts first byte", "tts last byte", "realtime first audio"]
    for row in rows:
        g, s = gateway.samples.get(row, []), speaches.samples.get(row, [])
        if not (g or s or row in gateway.failed or row in speaches.failed):
            continue  # skipped with --skip
        if not g or not s:
            cells = [
                f"{statistics.median(v):,.0f} ms p50, {pct(v, 95):,.0f} p95" if v else "not run (below)"
                for v in (g, s)
            ]
            print(f"| {row} | {cells[0]} | {cells[1]} | - |")
            continue
        line(f"{row} p50 (n={len(g)}/{len(s)})", statistics.median(g), statistics.median(s), "ms")
        line(f"{row} p95", pct(g, 95), pct(s, 95), "ms")
        if row in gateway.errors and row in speaches.errors:
            gw, sw = corpus_wer(gateway.errors[row]) * 100, corpus_wer(speaches.errors[row]) * 100
            ratio = f"{gw / sw:.2f}" if sw else "-"
            print(f"| {row} WER | {gw:.1f} % | {sw:.1f} % | {ratio} |")
    for label, g_mib, s_mib in extra:
        line(label, g_mib, s_mib, "MiB")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--speaches-url", required=True, help="a running Speaches, e.g. http://127.0.0.1:8010"
    )
    parser.add_argument("--speaches-pid", type=int, help="Speaches' process (default: the one on its port)")
    parser.add_argument("--chat-url", help="Speaches' chat server (its memory is added to Speaches' row)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over each input")
    parser.add_argument("--realtime-rounds", type=int, default=2, help="passes over the questions")
    parser.add_argument("--questions", type=int, default=4, help=f"of the {len(QUESTIONS)} spoken questions")
    parser.add_argument("--short-clips", type=int, default=4, help="sentences for the short-file row")
    parser.add_argument("--long-seconds", type=float, default=29.0)
    parser.add_argument("--frame-ms", type=int, default=100, help="realtime input_audio_buffer.append size")
    parser.add_argument(
        "--align-prompt",
        action="store_true",
        help="give Speaches' realtime session the gateway's instructions and temperature (else its own)",
    )
    parser.add_argument("--speaches-asr-model", default="Systran/faster-whisper-base")
    parser.add_argument("--speaches-tts-model", default="speaches-ai/piper-en_US-joe-medium")
    parser.add_argument("--speaches-voice", default="joe")
    parser.add_argument("--speaches-realtime-model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--skip", nargs="*", default=[], choices=["asr", "tts", "realtime"])
    args = parser.parse_args()

    speaches_url = args.speaches_url.rstrip("/")
    try:
        httpx.get(f"{speaches_url}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"Speaches is not answering at {speaches_url}/health: {exc}", file=sys.stderr)
        return 2
    speaches_pid = args.speaches_pid or pid_on_port(speaches_url)
    chat_pid = pid_on_port(args.chat_url) if args.chat_url else None
    load_start = os.getloadavg()

    server = ServerProcess("serve")
    try:
        server.wait_ready()
        time.sleep(2.0)  # let start-up allocations settle before the idle reading
        gateway = Side(
            name="gateway",
            url=server.url,
            asr_model="whisper-1",
            tts_model="tts-1",
            voice="joe",
            realtime_model="model=gpt-realtime",
            tts_rate=RATE,
        )
        speaches = Side(
            name="speaches",
            url=speaches_url,
            asr_model=args.speaches_asr_model,
            tts_model=args.speaches_tts_model,
            voice=args.speaches_voice,
            realtime_model=f"model={args.speaches_realtime_model}&transcription_model={args.speaches_asr_model}",
            tts_rate=22050,  # Piper medium voices' own rate; Speaches sends pcm unresampled
        )
        sides = [gateway, speaches]

        def memory() -> tuple[float, float, float]:
            chat = tree_rss_mib(chat_pid) if chat_pid else float("nan")
            own = tree_rss_mib(speaches_pid) if speaches_pid else float("nan")
            return tree_rss_mib(server.proc.pid), own, chat

        mem_start = memory()

        prose = sentences(PROSE)
        short = [(t, wav_bytes(spoken(server.url, t), RATE)) for t in prose[: args.short_clips]]
        pcms: list[bytes] = []
        target = args.long_seconds * 2 * RATE
        for text in prose:  # whole sentences until the clip is closest to --long-seconds
            pcm = spoken(server.url, text)
            have = sum(map(len, pcms))
            if pcms and abs(have + len(pcm) - target) > abs(have - target):
                break
            pcms.append(pcm)
        long_text = " ".join(prose[: len(pcms)])
        long_clip = [(long_text, wav_bytes(b"".join(pcms), RATE))]
        long_s = sum(map(len, pcms)) / 2 / RATE
        short_s = [len(spoken(server.url, t)) / 2 / RATE for t, _ in short]
        questions = [spoken(server.url, q) for q in QUESTIONS[: args.questions]]

        t0 = time.perf_counter()
        if "asr" not in args.skip:
            asr_rows(sides, "asr short", short, args.rounds)
            asr_rows(sides, "asr long", long_clip, args.rounds)
        audio_s: dict[str, float] = {}
        if "tts" not in args.skip:
            audio_s = tts_rows(sides, args.rounds)
        rt_errors: dict[str, list[str]] = {}
        if "realtime" not in args.skip:
            frame_bytes = RATE * args.frame_ms // 1000 * 2
            aligned: dict[str, Any] = {}
            if args.align_prompt:  # the gateway's own defaults, so the LLM stage answers the same prompt
                aligned = {
                    "instructions": DEFAULT_INSTRUCTIONS,
                    "temperature": load_settings().embedded_llm_temperature,
                }
            rt_errors = asyncio.run(
                realtime_rows(sides, questions, args.realtime_rounds, frame_bytes, aligned)
            )
        run_s = time.perf_counter() - t0
        mem_end = memory()
    finally:
        server.stop()
    load_end = os.getloadavg()

    print(
        f"gateway: embedded engine, {server.url}; speaches: {speaches_url} (pid {speaches_pid}), "
        f"chat server pid {chat_pid}"
    )
    print(
        f"inputs: {len(short)} short clips ({', '.join(f'{s:.1f}' for s in short_s)} s), one {long_s:.1f} s "
        f"clip, TTS text {len(TTS_TEXT)} chars (audio: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in audio_s.items())
        + f"), {len(questions)} realtime questions x {args.realtime_rounds} rounds"
        f" ({args.frame_ms} ms frames, {'aligned' if args.align_prompt else 'own'} realtime prompts);"
        f" {args.rounds} rounds"
    )
    print(f"load average (1/5/15 min) at start {load_start}, at end {load_end}; run {run_s:.0f} s")
    extra = [
        ("RSS at bench start (speaches alone)", mem_start[0], mem_start[1]),
        ("RSS after run (speaches alone)", mem_end[0], mem_end[1]),
    ]
    if chat_pid:
        extra += [
            ("RSS at bench start (speaches + chat server)", mem_start[0], mem_start[1] + mem_start[2]),
            ("RSS after run (speaches + chat server)", mem_end[0], mem_end[1] + mem_end[2]),
        ]
    report(gateway, speaches, extra)
    for side in sides:
        for row, why in side.failed.items():
            print(f"{side.name}: {row} could not run: {why}")
    for name, messages in rt_errors.items():
        if messages:
            print(f"{name}: {len(messages)} realtime error events in measured turns, e.g. {messages[0]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
