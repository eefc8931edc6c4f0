"""Fuzzing of the WebSocket protocols (/read/stream, /voice, /v1/realtime) against a real gateway process.

Each case is one message: text that is not JSON, JSON that is not an object, objects without a usable
`type`, unknown types, known types with fields of the wrong type or absurd size, controls out of order,
binary garbage, deeply nested JSON and frames over the size limit. After each message a `ping` must be
answered (the session is still working); a message known to be bad must have drawn an `error` event first;
a close must be clean (1000, 1001, 1008, 1009, 1013 with a reason), never 1011 or a dropped connection;
an `internal_error` event is a finding too. At the end the gateway must still answer /health.

    python bench/fuzz_ws.py [--cases 4000] [--time-limit 600] [--url http://127.0.0.1:8004] [--stuck 4]

Then hostile transports (issue 18), on plain sockets (bench/hostile_clients.py): `--stuck` readers start a
long /read/stream and never read a byte (their socket receive buffers shrunk to the minimum); meanwhile
a normal session must stream, each stuck socket must be aborted within WS_SEND_TIMEOUT_SECONDS (+ the idle
close and a margin) and its slot come back; and WebSocket handshakes sent a byte at a time must be closed
within HTTP_HEADER_TIMEOUT_SECONDS. `--stuck 0` skips them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import math
import random
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hostile_clients import (
    TransportResult,
    open_socket,
    report_transport,
    stuck_reader,
    wait_buffered,
    wait_closed_by_server,
    wait_reset_by_server,
)
from tests.support import ServerProcess

CLEAN_CLOSES = {1000, 1001, 1008, 1009, 1013}
ANSWER_TIMEOUT = 60.0
WS_MAX_BYTES = 1024 * 1024  # the server the bench starts runs with WS_MAX_MESSAGE_BYTES at this value


@dataclass(frozen=True)
class Protocol:
    path: str
    ping: dict[str, Any]  # the barrier after each case; its pong must be told apart from a case's
    valid: dict[str, dict[str, Any]]  # a well-formed message per type the cases use
    setup: tuple[dict[str, Any], ...] = ()
    binary_must_error: str = "odd"  # "always", "odd" (not whole 16-bit samples) or "never" (any answer)
    barrier_type: str = "pong"
    other_types: tuple[str, ...] = ()  # real types the cases leave out; never sent as "unknown"
    barrier_key: str = "id"  # the barrier answer carries the same value under this key as the ping


READ_STREAM = Protocol(
    path="/read/stream",
    ping={"type": "ping"},
    valid={
        "start": {"type": "start", "text": "Fuzzing keeps us honest.", "voice": "default", "language": "en"},
        "pause": {"type": "pause"},
        "resume": {"type": "resume"},
        "cancel": {"type": "cancel"},
    },
    binary_must_error="always",
)

VOICE = Protocol(
    path="/voice",
    ping={"type": "ping", "id": 424242},
    valid={
        "session.update": {
            "type": "session.update",
            "session": {
                "voice": "default",
                "language": "en",
                "max_response_tokens": 8,
                "turn_detection": None,
            },
        },
        "audio.commit": {"type": "audio.commit"},
        "audio.clear": {"type": "audio.clear"},
        "interrupt": {"type": "interrupt"},
        "ping": {"type": "ping", "id": 1},
    },
    # Server VAD off and short replies: the fuzzer should exercise parsing and state, not the LLM.
    setup=(
        {
            "type": "session.update",
            "session": {"max_response_tokens": 8, "turn_detection": None},
        },
    ),
)

_SILENCE_B64 = "A" * 1280  # 960 bytes of zeros in base64

# OpenAI Realtime has no ping: the barrier asks for an item that does not exist and waits for the error
# naming the barrier's event_id. No case asks for a response: the fuzzer is about parsing and state.
REALTIME = Protocol(
    path="/v1/realtime",
    ping={"type": "conversation.item.retrieve", "item_id": "fuzz_missing", "event_id": "fuzz-barrier"},
    barrier_type="error",
    barrier_key="event_id",
    valid={
        "session.update": {
            "type": "session.update",
            "session": {"type": "realtime", "instructions": "Brief."},
        },
        "input_audio_buffer.append": {"type": "input_audio_buffer.append", "audio": _SILENCE_B64},
        "input_audio_buffer.commit": {"type": "input_audio_buffer.commit"},
        "input_audio_buffer.clear": {"type": "input_audio_buffer.clear"},
        "conversation.item.create": {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi."}]},
        },
        "conversation.item.delete": {"type": "conversation.item.delete", "item_id": "item_x"},
        "conversation.item.truncate": {
            "type": "conversation.item.truncate",
            "item_id": "item_x",
            "content_index": 0,
            "audio_end_ms": 10,
        },
        "response.cancel": {"type": "response.cancel"},
        "output_audio_buffer.clear": {"type": "output_audio_buffer.clear"},
    },
    setup=(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": None}}},
        },
    ),
    binary_must_error="never",
    other_types=("response.create", "transcription_session.update"),
)

PROTOCOLS = {"read_stream": READ_STREAM, "voice": VOICE, "realtime": REALTIME}


@dataclass
class Case:
    kind: str
    payload: str | bytes
    must_error: bool = False
    expect_close: int | None = None


def _rand_text(rng: random.Random, n: int) -> str:
    alphabet = string.printable + "\x00\x1f\u00e9\u4e2d\U0001f600\ufffd\u202e\ud800"
    return "".join(rng.choice(alphabet) for _ in range(n))


def _rand_value(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(12)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), 10**400])
    if choice == 3:
        return rng.choice([0.0, -0.0, 1e308, -1e-308, math.nan, math.inf, -math.inf, 3.5])
    if choice == 4:
        return _rand_text(rng, rng.randrange(0, 40))
    if choice == 5:
        return "x" * rng.choice([1000, 60_000, 200_000])
    if choice == 6 and depth < 3:
        return [_rand_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if choice == 7 and depth < 3:
        return {_rand_text(rng, 5): _rand_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}
    if choice == 8:
        return ""
    if choice == 9:
        return " \n\t "
    return rng.choice(["default", "en", "joe", "xx-YY", "../../etc/passwd", "%s%n", "<script>"])


def _mutate(rng: random.Random, message: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(message))
    for _ in range(rng.randrange(1, 4)):
        target = out
        if isinstance(out.get("session"), dict) and rng.random() < 0.6:
            target = out["session"]
        keys = [k for k in target if k != "type"] or ["extra"]
        key = rng.choice([*keys, _rand_text(rng, 6)])
        action = rng.randrange(3)
        if action == 0:
            target.pop(key, None)
        else:
            target[key] = _rand_value(rng)
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True)


def generate(rng: random.Random, proto: Protocol, max_bytes: int = WS_MAX_BYTES) -> Case:
    kind = rng.choices(
        [
            "not_json",
            "json_not_object",
            "bad_type_field",
            "unknown_type",
            "mutated",
            "out_of_order",
            "binary",
            "deep_nesting",
            "huge_frame",
            "valid",
        ],
        weights=[10, 8, 8, 8, 30, 14, 10, 3, 2, 7],
    )[0]
    if kind == "not_json":
        # A text frame must be valid UTF-8: no lone surrogates outside JSON escapes.
        raw = _rand_text(rng, 50).replace("\ud800", "\ufffd")
        text = rng.choice(['{"type": "start"', "{'type': 'ping'}", "NaN]", "", raw])
        try:
            json.loads(text)
        except ValueError:
            return Case(kind, text, must_error=True)
        return Case(kind, text)
    if kind == "json_not_object":
        value = rng.choice([[], [1, 2], "start", 42, None, True, [{"type": "ping"}]])
        return Case(kind, _dumps(value), must_error=True)
    if kind == "bad_type_field":
        value = rng.choice(
            [{}, {"type": None}, {"type": 7}, {"type": ["start"]}, {"type": {"x": 1}}, {"typ": "ping"}]
        )
        return Case(kind, _dumps(value), must_error=True)
    if kind == "unknown_type":
        name = rng.choice(
            ["START", "stop", "", " ping", "audio.append", "response.create", _rand_text(rng, 8)]
        )
        if name in proto.valid or name in proto.other_types or name == proto.ping["type"]:
            name += "_"
        return Case(kind, _dumps({"type": name, **_rand_value_dict(rng)}), must_error=True)
    if kind == "mutated":
        message = _mutate(rng, rng.choice(list(proto.valid.values())))
        return Case(kind, _dumps(message))
    if kind == "out_of_order":
        name = rng.choice([k for k in proto.valid if k not in ("ping", "start", "session.update")])
        return Case(kind, _dumps(proto.valid[name]))
    if kind == "binary":
        n = rng.choice([0, 1, 3, 961, 4800, 48_001])
        data = rng.randbytes(n)
        bad = proto.binary_must_error == "always" or (proto.binary_must_error == "odd" and n % 2 == 1)
        return Case(kind, data, must_error=bad and n > 0)
    if kind == "deep_nesting":
        depth = rng.choice([1000, 100_000])
        return Case(kind, "[" * depth + "]" * depth, must_error=True)
    if kind == "huge_frame":
        return Case(kind, _dumps({"type": "ping", "pad": "x" * (max_bytes + 10)}), expect_close=1009)
    return Case(kind, _dumps(rng.choice(list(proto.valid.values()))))


def _rand_value_dict(rng: random.Random) -> dict[str, Any]:
    return {"text": _rand_value(rng)} if rng.random() < 0.5 else {}


@dataclass
class WsFuzzResult:
    cases: collections.Counter[str] = field(default_factory=collections.Counter)
    errors_seen: collections.Counter[str] = field(default_factory=collections.Counter)
    closes: collections.Counter[int] = field(default_factory=collections.Counter)
    connections: int = 0
    findings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.cases.values())


def _error_code(event: dict[str, Any]) -> str:
    """`code` at the top (ours) or inside `error` (OpenAI Realtime)."""
    nested = event.get("error")
    return str(event.get("code") or (nested.get("code") if isinstance(nested, dict) else None) or "?")


async def _answer(ws: ClientConnection, proto: Protocol) -> list[dict[str, Any]]:
    """Send a ping and collect the JSON events that arrive before its pong."""
    await ws.send(json.dumps(proto.ping))
    events: list[dict[str, Any]] = []
    while True:
        message = await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT)
        if isinstance(message, bytes):
            continue
        event = json.loads(message)
        # read_stream's pong carries no id (its cases never ping); /voice echoes the barrier's id;
        # /v1/realtime names the barrier's event_id in its error.
        key = proto.barrier_key
        nested = event.get("error") if isinstance(event.get("error"), dict) else {}
        if event.get("type") == proto.barrier_type and proto.ping.get(key) in (
            event.get(key),
            nested.get(key),
        ):
            return events
        events.append(event)


async def _connect(url: str, headers: dict[str, str], proto: Protocol) -> ClientConnection:
    ws = await connect(url, additional_headers=headers, max_size=None, open_timeout=30)
    for message in proto.setup:
        await ws.send(json.dumps(message))
    await _answer(ws, proto)
    return ws


async def fuzz_protocol(
    base_url: str,
    proto: Protocol,
    cases: int,
    deadline: float,
    seed: int,
    result: WsFuzzResult,
    headers: dict[str, str] | None = None,
    max_bytes: int = WS_MAX_BYTES,
) -> None:
    rng = random.Random(seed)
    url = base_url.replace("http", "ws", 1) + proto.path
    headers = headers or {}
    ws: ClientConnection | None = None
    done = 0
    while done < cases and time.monotonic() < deadline:
        if ws is None:
            ws = await _connect(url, headers, proto)
            result.connections += 1
        case = generate(rng, proto, max_bytes)
        label = f"{proto.path} {case.kind}"
        result.cases[label] += 1
        done += 1
        shown = case.payload[:80] if isinstance(case.payload, str) else f"<{len(case.payload)} bytes>"
        try:
            await ws.send(case.payload)
            events = await _answer(ws, proto)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else 1006
            reason = exc.rcvd.reason if exc.rcvd else ""
            result.closes[code] += 1
            if code not in CLEAN_CLOSES or (case.expect_close and code != case.expect_close):
                result.findings.append(f"{label}: closed {code} {reason!r} after {shown!r}")
            ws = None
            continue
        except TimeoutError:
            result.findings.append(f"{label}: no answer to ping within {ANSWER_TIMEOUT} s after {shown!r}")
            await ws.close()
            ws = None
            continue
        if case.expect_close:
            result.findings.append(f"{label}: a frame over the limit was accepted")
        codes = [_error_code(e) for e in events if e.get("type") == "error"]
        for code in codes:
            result.errors_seen[str(code)] += 1
        if "internal_error" in codes:
            result.findings.append(f"{label}: internal_error after {shown!r}")
        if case.must_error and not codes:
            result.findings.append(f"{label}: no error event for a bad message {shown!r}: {events[:3]}")
    if ws is not None:
        await ws.close()


async def fuzz(
    base_url: str,
    cases_per_protocol: int,
    time_limit: float,
    seed: int = 9,
    headers: dict[str, str] | None = None,
) -> WsFuzzResult:
    result = WsFuzzResult()
    start = time.monotonic()
    deadline = start + time_limit
    async with httpx.AsyncClient(timeout=30) as client:
        config = (await client.get(base_url + "/config", headers=headers)).json()["config"]
    max_bytes = int(config["WS_MAX_MESSAGE_BYTES"])
    for i, proto in enumerate(PROTOCOLS.values()):
        await fuzz_protocol(
            base_url, proto, cases_per_protocol, deadline, seed + i, result, headers, max_bytes
        )
    result.seconds = time.monotonic() - start
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            health = await client.get(base_url + "/health", headers=headers)
        if health.status_code != 200:
            result.findings.append("gateway /health not 200 after fuzzing")
    except httpx.HTTPError as exc:
        result.findings.append(f"gateway unreachable after fuzzing: {exc}")
    return result


def report(result: WsFuzzResult) -> None:
    print(f"messages: {result.total} over {result.connections} connections in {result.seconds:.1f} s")
    for label, n in sorted(result.cases.items()):
        print(f"  {n:6d}  {label}")
    print("error codes seen:", dict(result.errors_seen.most_common()))
    print("closes:", dict(result.closes))
    print(f"findings: {len(result.findings)}")
    for finding in result.findings[:30]:
        print("  FINDING", finding)


def server_env() -> dict[str, str]:
    return {
        "WS_MAX_MESSAGE_BYTES": str(WS_MAX_BYTES),
        "LOG_LEVEL": "warning",
        "MAX_STREAMS": "0",
        "WS_SEND_TIMEOUT_SECONDS": "5",
        "HTTP_HEADER_TIMEOUT_SECONDS": "3",
    }


# -- hostile transports ------------------------------------------------------------------------------------

LONG_TEXT = "A listener who never reads must not hold the gateway hostage. " * 300


def _gauges(base_url: str, headers: dict[str, str]) -> dict[str, float]:
    text = httpx.get(base_url + "/metrics", headers=headers, timeout=30).text
    out = {}
    for line in text.splitlines():
        if line.startswith(("voice_gateway_stream_slots_in_use", "voice_gateway_websocket_connections")):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


async def _streams(url: str, headers: dict[str, str]) -> int:
    """A normal listener: start a short text, count the audio bytes until `complete`."""
    async with connect(url + "/read/stream", additional_headers=headers, open_timeout=30) as ws:
        await ws.send(json.dumps({"type": "start", "text": "Others are still served."}))
        audio = 0
        while True:
            message = await asyncio.wait_for(ws.recv(), ANSWER_TIMEOUT)
            if isinstance(message, bytes):
                audio += len(message)
            elif json.loads(message)["type"] in ("complete", "error"):
                return audio


def transport_fuzz(base_url: str, stuck: int = 4, headers: dict[str, str] | None = None) -> TransportResult:
    """Stuck readers and slow handshakes. Timeouts an older gateway does not report are assumed at their
    defaults, so the same run measures a gateway without the protections."""
    headers = headers or {}
    port = urlsplit(base_url).port or 80
    cfg = httpx.get(base_url + "/config", headers=headers, timeout=30).json()["config"]
    send_s = float(cfg.get("WS_SEND_TIMEOUT_SECONDS", 20))
    idle_s = float(cfg.get("WS_IDLE_TIMEOUT_SECONDS", 300)) or 300.0
    head_s = float(cfg.get("HTTP_HEADER_TIMEOUT_SECONDS", 10))
    ws_url = base_url.replace("http", "ws", 1)
    result = TransportResult()
    start = time.monotonic()
    before = _gauges(base_url, headers)
    sockets = []
    try:
        for _ in range(stuck):
            sock = stuck_reader(port, LONG_TEXT, headers)
            sockets.append(sock)
            if not wait_buffered(sock, 3000, 60):
                result.findings.append("stuck reader: its stream never started")
        result.checks["stuck reader"] += stuck
        t0 = time.monotonic()
        audio = asyncio.run(_streams(ws_url, headers))
        result.checks["served beside stuck readers"] += 1
        if audio <= 0:
            result.findings.append("a normal session got no audio while readers were stuck")
        result.figures.append(f"a normal session beside {stuck} stuck readers: {audio} audio bytes")
        bound = min(send_s, idle_s) + 5 + 10
        closed = [wait_reset_by_server(sock, max(1.0, bound - (time.monotonic() - t0))) for sock in sockets]
        took = time.monotonic() - t0
        if not all(closed):
            result.findings.append(
                f"stuck reader: {closed.count(False)}/{stuck} sockets still open after {took:.1f} s"
            )
        result.figures.append(f"{stuck} stuck readers -> {closed.count(True)} cut after {took:.1f} s")
    finally:
        for sock in sockets:
            sock.close()
    deadline = time.monotonic() + 10
    while _gauges(base_url, headers) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    if (after := _gauges(base_url, headers)) != before:
        result.findings.append(f"stream gauges not back: {before} -> {after}")

    # A WebSocket handshake a byte at a time is a slow request head like any other.
    for _ in range(2):
        upgrade = (
            f"GET /read/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        ).encode()
        sock = open_socket(port, timeout=head_s + 10)
        t0 = time.monotonic()
        try:
            for byte in upgrade:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.2)
                if time.monotonic() - t0 > head_s + 5:
                    break
            closed_in_time = wait_closed_by_server(sock, max(0.5, head_s + 5 - (time.monotonic() - t0)))
        finally:
            sock.close()
        took = time.monotonic() - t0
        result.checks["slow handshake"] += 1
        if not closed_in_time or took > head_s + 3:
            result.findings.append(
                f"slow handshake: still open after {took:.1f} s (head timeout {head_s:g} s)"
            )
        result.figures.append(f"slow handshake -> closed after {took:.1f} s")
    result.seconds = time.monotonic() - start
    if httpx.get(base_url + "/health", headers=headers, timeout=30).status_code != 200:
        result.findings.append("gateway /health not 200 after the hostile transports")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=2000, help="messages per protocol")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--url", default=None, help="fuzz a running gateway instead of starting one")
    parser.add_argument("--stuck", type=int, default=4, help="readers that never read (0: no transports)")
    args = parser.parse_args()
    server = None
    url = args.url
    if url is None:
        server = ServerProcess("serve", env=server_env())
        server.wait_ready()
        url = server.url
    transport = TransportResult()
    try:
        result = (
            asyncio.run(fuzz(url, args.cases, args.time_limit, args.seed)) if args.cases else WsFuzzResult()
        )
        report(result)
        if args.stuck and urlsplit(url).hostname in ("127.0.0.1", "localhost"):
            transport = transport_fuzz(url, args.stuck)
            report_transport(transport)
        crashed = server is not None and server.proc.poll() is not None
    finally:
        if server is not None:
            server.stop()
    ok = not result.findings and not transport.findings and not crashed
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
