"""Faults against real processes, with figures:

1. 1,000 aborted sessions (/read/stream and /voice, cut at every stage: before start, mid-synthesis, mid
   upload, mid reply, a TCP reset without a close frame or a plain close): afterwards the gateway's asyncio
   task count and open-stream gauges return to their idle values, RSS does not keep growing (checkpoints
   every 250 sessions).
2. Gateway restarted while clients stream: SIGKILL (clients see the connection drop, 1006) and SIGTERM
   (clients see 1001 with a reason); each client reconnects with backoff and completes a stream.
3. Backend killed mid-stream (VOICE_ENGINE=vllm-omni in front of `voice-gateway engine-server`, SIGKILL):
   the client gets an `error` event on the same open connection, which stays usable; after the backend
   restarts, the next `start` succeeds on that same connection.

    python bench/fault_bench.py [--sessions 1000] [--skip-backend]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import support
from tests.support import ServerProcess

LONG_TEXT = " ".join(f"This is sentence number {i} of a long article read aloud." for i in range(1, 40))
SHORT_TEXT = "Back again. The stream works."


def start(command: str, port: int | None = None, env: dict[str, str] | None = None) -> ServerProcess:
    """A server on a chosen port, so a restarted one is found where the clients left the old one."""
    if port is None:
        return ServerProcess(command, env=env)
    with mock.patch.object(support, "free_port", return_value=port):
        return ServerProcess(command, env=env)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def gauges(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics", timeout=30).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("voice_gateway_asyncio_tasks", "voice_gateway_websocket_connections")) or (
            line.startswith("voice_gateway_active_streams{")
        ):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def _abort(ws: ClientConnection) -> None:
    ws.transport.abort()  # a reset, no close frame: a crashed client or a lost network


async def _first(ws: ClientConnection, predicate: Any, wait_s: float = 60) -> Any:
    while True:
        message = await asyncio.wait_for(ws.recv(), wait_s)
        if predicate(message):
            return message


def _is_event(kind: str) -> Any:
    return lambda m: isinstance(m, str) and json.loads(m).get("type") == kind


async def aborted_session(ws_url: str, i: int, question: bytes) -> str:
    """One session cut at stage `i % 9`; returns the stage name."""
    stage = i % 9
    path = "/voice" if stage >= 5 else "/read/stream"
    ws = await connect(ws_url + path, open_timeout=60, max_size=None)
    try:
        if path == "/read/stream":
            if stage == 0:
                name = "read: before start"
            else:
                await ws.send(json.dumps({"type": "start", "text": LONG_TEXT}))
                await _first(ws, _is_event("started"))
                name = "read: after started"
                if stage >= 2:
                    await _first(ws, lambda m: isinstance(m, bytes))
                    name = "read: mid-audio"
                if stage == 3:
                    await ws.send(json.dumps({"type": "pause"}))
                    await _first(ws, _is_event("paused"))
                    name = "read: paused"
                if stage == 4:
                    await ws.close()  # a polite close mid-stream
                    return "read: closed mid-audio"
        else:
            await _first(ws, _is_event("session.created"))
            name = "voice: after session.created"
            if stage >= 6:
                await ws.send(json.dumps({"type": "session.update", "session": {"turn_detection": None}}))
                for k in range(0, len(question) // 2, 960):
                    await ws.send(question[k : k + 960])
                name = "voice: mid-upload"
            if stage == 7 and i % 45 == 7:  # a few mid-reply: each costs a transcription and an answer
                await ws.send(json.dumps({"type": "audio.commit"}))
                await _first(ws, _is_event("response.started"), wait_s=120)
                name = "voice: mid-reply"
            if stage == 8:
                await ws.close()
                return "voice: closed mid-upload"
        _abort(ws)
        return name
    except BaseException:
        _abort(ws)
        raise


async def _settle(url: str, idle: dict[str, float], wait_s: float = 30) -> tuple[dict[str, float], float]:
    t0 = time.monotonic()
    while True:
        now = await asyncio.to_thread(gauges, url)
        settled = all(now.get(k, 0) <= v for k, v in idle.items() if "tasks" not in k) and now.get(
            "voice_gateway_asyncio_tasks", 0
        ) <= idle.get("voice_gateway_asyncio_tasks", 0)
        if settled or time.monotonic() - t0 > wait_s:
            return now, time.monotonic() - t0
        await asyncio.sleep(0.25)


async def aborted_sessions(server: ServerProcess, n: int, concurrency: int = 8) -> bool:
    async with httpx.AsyncClient(timeout=60) as http:
        question = (
            await http.post(server.url + "/read", json={"text": "What time is it?", "response_format": "pcm"})
        ).content
    pid = server.proc.pid
    idle = await asyncio.to_thread(gauges, server.url)
    print(f"[aborts] idle: RSS {rss_mib(pid):.0f} MiB, gauges {idle}")
    stages: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    checkpoints: list[tuple[int, float, float]] = []
    t0 = time.monotonic()

    async def worker(queue: Iterator[int]) -> None:
        for i in queue:
            try:
                stages[await aborted_session(server.ws_url, i, question)] += 1
            except (ConnectionClosed, OSError, TimeoutError) as exc:
                failures[type(exc).__name__] += 1

    # Batches of 250 with a quiet checkpoint after each: tasks must be back to idle, RSS must level off.
    for batch_start in range(0, n, 250):
        queue = iter(range(batch_start, min(n, batch_start + 250)))
        await asyncio.gather(*(worker(queue) for _ in range(concurrency)))
        now, _ = await _settle(server.url, idle, wait_s=15)
        checkpoints.append(
            (min(n, batch_start + 250), rss_mib(pid), now.get("voice_gateway_asyncio_tasks", -1))
        )
    seconds = time.monotonic() - t0
    after, wait = await _settle(server.url, idle)
    print(f"[aborts] {n} sessions in {seconds:.1f} s, {concurrency} at a time; stages {dict(stages)}")
    if failures:
        print(f"[aborts] client-side failures: {dict(failures)}")
    for count, rss, tasks in checkpoints:
        print(f"[aborts]   after {count:5d}: RSS {rss:6.0f} MiB, asyncio tasks {tasks:.0f}")
    print(f"[aborts] settled in {wait:.1f} s: {after}")
    leaked = {k: after.get(k, 0) - v for k, v in idle.items() if after.get(k, 0) > v}
    growth = checkpoints[-1][1] - checkpoints[0][1] if len(checkpoints) > 1 else 0.0
    print(
        f"[aborts] leaked gauges/tasks vs idle: {leaked or 'none'}; "
        f"RSS growth from the first checkpoint to the last: {growth:+.0f} MiB"
    )
    healthy = (await asyncio.to_thread(httpx.get, server.url + "/health", timeout=30)).status_code == 200
    return not leaked and not failures and healthy


async def stream_once(ws_url: str, text: str = SHORT_TEXT) -> float:
    """A whole short stream; returns seconds to its first audio frame."""
    t0 = time.perf_counter()
    async with connect(ws_url + "/read/stream", open_timeout=10) as ws:
        await ws.send(json.dumps({"type": "start", "text": text}))
        first = None
        while True:
            message = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(message, bytes):
                first = first or time.perf_counter() - t0
                continue
            event = json.loads(message)
            if event["type"] == "complete":
                return first or 0.0
            if event["type"] == "error":
                raise RuntimeError(event["code"])


async def streaming_client(ws_url: str, ready: asyncio.Event) -> tuple[int | None, str, float]:
    """Streams a long text until the gateway goes away; returns (close code or None, reason, when)."""
    async with connect(ws_url + "/read/stream", open_timeout=30) as ws:
        await ws.send(json.dumps({"type": "start", "text": LONG_TEXT}))
        await _first(ws, lambda m: isinstance(m, bytes))
        ready.set()
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 300)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            return code, exc.rcvd.reason if exc.rcvd else "", time.monotonic()
    return None, "", time.monotonic()


async def reconnect(ws_url: str, give_up: float) -> tuple[float, int]:
    """Retry with backoff until a whole stream succeeds; returns (time of success, attempts)."""
    attempts, delay = 0, 0.25
    while time.monotonic() < give_up:
        attempts += 1
        try:
            await stream_once(ws_url)
            return time.monotonic(), attempts
        except (OSError, ConnectionClosed, TimeoutError, RuntimeError):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise TimeoutError("no reconnect")


async def restart_gateway(server: ServerProcess, how: signal.Signals, clients: int = 3) -> ServerProcess:
    port = server.port
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(streaming_client(server.ws_url, r)) for r in readies]
    await asyncio.gather(*(r.wait() for r in readies))
    t_signal = time.monotonic()
    server.proc.send_signal(how)
    outcomes = await asyncio.gather(*tasks)
    await asyncio.to_thread(server.proc.wait, 120)
    server.stop()
    seen = Counter(
        f"{code} {reason!r}" if code else "dropped (no close frame)" for code, reason, _ in outcomes
    )
    detect = max(t for _, _, t in outcomes) - t_signal
    print(
        f"[restart/{how.name}] {clients} streaming clients saw: {dict(seen)}; "
        f"all within {detect * 1000:.0f} ms"
    )
    t_restart = time.monotonic()
    new = start("serve", port)
    results = await asyncio.gather(*(reconnect(new.ws_url, time.monotonic() + 300) for _ in range(clients)))
    ready_s = max(t for t, _ in results) - t_restart
    print(
        f"[restart/{how.name}] new gateway on the same port; every client completed a stream "
        f"{ready_s:.1f} s after the restart began (model load included), attempts {[a for _, a in results]}"
    )
    return new


async def backend_killed(skip: bool) -> bool:
    if skip:
        print("[backend] skipped")
        return True
    engine = start("engine-server")
    await asyncio.to_thread(engine.wait_ready, 300)
    engine_port = engine.port
    gw = start(
        "serve",
        env={
            "VOICE_ENGINE": "vllm-omni",
            "OMNI_SERVICE_URL": engine.url,
            "TTS_SERVICE_URL": engine.url,
            "BACKEND_POLL_INTERVAL": "1",
            "BACKEND_BREAKER_RESET": "2",
            "BACKEND_LOAD_GRACE": "0",
        },
    )
    ok = False
    try:
        await asyncio.to_thread(gw.wait_ready, 300)
        async with connect(gw.ws_url + "/read/stream", open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "start", "text": LONG_TEXT}))
            await _first(ws, lambda m: isinstance(m, bytes))
            t_kill = time.monotonic()
            engine.proc.kill()
            error = json.loads(await _first(ws, _is_event("error"), wait_s=120))
            t_error = time.monotonic() - t_kill
            print(
                f"[backend] engine server SIGKILLed mid-stream: error event after {t_error * 1000:.0f} ms: "
                f"code={error.get('code')!r} message={error.get('message')!r}"
            )
            await ws.send(json.dumps({"type": "ping"}))
            pong = json.loads(await _first(ws, _is_event("pong"), wait_s=30))
            print(f"[backend] same connection still answers: {pong}")
            engine.stop()
            t_restart = time.monotonic()
            engine = start("engine-server", engine_port)
            attempts = 0
            codes: Counter[str] = Counter()
            while time.monotonic() - t_restart < 300:
                attempts += 1
                await ws.send(json.dumps({"type": "start", "text": SHORT_TEXT}))
                while True:
                    message = await asyncio.wait_for(ws.recv(), 120)
                    if isinstance(message, bytes):
                        continue
                    event = json.loads(message)
                    if event["type"] in ("error", "complete"):
                        break
                if event["type"] == "complete":
                    print(
                        f"[backend] engine restarted: a stream completed on the same connection "
                        f"{time.monotonic() - t_restart:.1f} s later (load included), attempt {attempts}; "
                        f"errors meanwhile {dict(codes)}"
                    )
                    ok = True
                    break
                codes[event.get("code", "?")] += 1
                await asyncio.sleep(1)
    finally:
        gw.stop()
        engine.stop()
    return ok


async def main_async(args: argparse.Namespace) -> int:
    server = start("serve", env={"MAX_STREAMS": "64", "LOG_LEVEL": "warning"})
    results: dict[str, bool] = {}
    try:
        await asyncio.to_thread(server.wait_ready, 300)
        results["aborts"] = await aborted_sessions(server, args.sessions)
        server = await restart_gateway(server, signal.SIGKILL)
        server = await restart_gateway(server, signal.SIGTERM)
        results["restart"] = True
    finally:
        server.stop()
    results["backend"] = await backend_killed(args.skip_backend)
    print("results:", results)
    return 0 if all(results.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--skip-backend", action="store_true")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
