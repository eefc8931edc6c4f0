"""The one WebSocket connection base (gateway/sessions/connection.py) under /read/stream, /voice and
/v1/realtime, against the real server: the same writer (ASCII-safe JSON), the same serve loop (text and
binary frames, the connection kept after a bad one), the same gauge and the same conversation slots."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess

WAIT_S = 60  # a bound for a loaded machine; never reached when things work
LONE = "\ud800"  # a lone surrogate: valid in JSON text, not encodable as UTF-8


async def recv_event(ws: websockets.ClientConnection) -> dict[str, Any]:
    """The next JSON event, skipping audio frames."""
    async with asyncio.timeout(WAIT_S):
        while True:
            message = await ws.recv()
            if isinstance(message, str):
                event: dict[str, Any] = json.loads(message)
                return event


async def until(ws: websockets.ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        event = await recv_event(ws)
        if event["type"] == kind:
            return event


async def active_streams(base_url: str, kind: str) -> float:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        text = (await http.get(f"{base_url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "voice_gateway_active_streams" and sample.labels.get("kind") == kind:
                return sample.value
    return 0.0


async def settled(base_url: str, kind: str, expected: float) -> float:
    """The gauge once it reads `expected` (a session's cleanup runs after its socket closes)."""
    async with asyncio.timeout(WAIT_S):
        while (value := await active_streams(base_url, kind)) != expected:  # noqa: ASYNC110 - a remote gauge
            await asyncio.sleep(0.05)
    return value


# Raw frames: the ping id and the event type carry a lone surrogate as a JSON escape.
PING = '{"type": "ping", "id": "\\ud800"}'


async def test_read_stream_echoes_a_lone_surrogate_and_stays_open(gateway: ServerProcess) -> None:
    async with websockets.connect(gateway.ws_url + "/read/stream") as ws:
        await ws.send(PING)
        pong = await until(ws, "pong")
        assert (pong["id"], pong["state"]) == (LONE, "idle")
        await ws.send(b"\x00\x01")  # binary frames: refused with an error, the connection stays
        assert (await until(ws, "error"))["code"] == "binary_not_allowed"
        await ws.send(json.dumps({"type": "ping", "id": 2}))
        assert (await until(ws, "pong"))["id"] == 2


async def test_voice_echoes_a_lone_surrogate_and_stays_open(gateway: ServerProcess) -> None:
    async with websockets.connect(gateway.ws_url + "/voice") as ws:
        await until(ws, "session.created")
        await ws.send(PING)
        assert (await until(ws, "pong"))["id"] == LONE
        await ws.send(bytes(960))  # binary frames are input audio: no error
        await ws.send(json.dumps({"type": "ping", "id": 2}))
        assert (await recv_event(ws)) == {"type": "pong", "id": 2}


async def test_realtime_names_a_lone_surrogate_type_and_reads_json_in_binary_frames(
    gateway: ServerProcess,
) -> None:
    async with websockets.connect(gateway.ws_url + "/v1/realtime") as ws:
        await until(ws, "session.created")
        await ws.send('{"type": "\\ud800", "event_id": "ev_1"}')
        err = await until(ws, "error")
        assert (err["error"]["code"], err["error"]["event_id"]) == ("invalid_event_type", "ev_1")
        assert LONE in err["error"]["message"]
        update = {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
        await ws.send(json.dumps(update).encode())  # JSON in a binary frame, as some clients send it
        assert (await until(ws, "session.updated"))["session"]["instructions"] == "Be brief."


@pytest.mark.parametrize(("path", "kind"), [("/voice", "voice"), ("/v1/realtime", "realtime")])
async def test_a_conversation_is_counted_while_open_and_not_after(
    gateway: ServerProcess, path: str, kind: str
) -> None:
    before = await active_streams(gateway.url, kind)
    async with websockets.connect(gateway.ws_url + path) as ws:
        await until(ws, "session.created")
        assert await settled(gateway.url, kind, before + 1) == before + 1
    assert await settled(gateway.url, kind, before) == before


async def test_voice_and_realtime_share_the_conversation_slots(gateway: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        limit = (await http.get(f"{gateway.url}/config")).json()["config"]["MAX_VOICE_SESSIONS"]
    held = []
    try:
        for _ in range(limit):
            ws = await websockets.connect(gateway.ws_url + "/voice")
            held.append(ws)
            await until(ws, "session.created")
        async with websockets.connect(gateway.ws_url + "/v1/realtime") as extra:
            refused = await recv_event(extra)
            assert (refused["type"], refused["code"]) == ("error", "too_many_sessions")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), WAIT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        await held.pop().close()
        await settled(gateway.url, "voice", limit - 1)  # its slot is free once its session has ended
        async with websockets.connect(gateway.ws_url + "/v1/realtime") as admitted:
            assert (await recv_event(admitted))["type"] == "session.created"
    finally:
        for ws in held:
            await ws.close()
