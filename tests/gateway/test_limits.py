"""Stream limits, idle timeout and message size on a real gateway (tests/gateway/hardened.py):
each refusal is a close code (or 429) with a reason, slots come back when sessions end, the server
stays up."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.gateway.hardened import ENV_KEYS, FILE_KEY, IDLE_SECONDS, WS_MAX_BYTES
from tests.support import ServerProcess


def _open(server: ServerProcess, key: str) -> ClientConnection:
    return connect(server.ws_url + "/read/stream", additional_headers={"Authorization": f"Bearer {key}"})


def _alive(ws: ClientConnection) -> bool:
    ws.send(json.dumps({"type": "ping"}))
    return json.loads(ws.recv(timeout=15))["type"] == "pong"


def _closed(ws: ClientConnection, timeout: float = 15) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=timeout)
    assert info.value.rcvd is not None, "closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def _metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {ENV_KEYS[0]}"}).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))


def test_concurrent_streams_per_key_and_in_total(hardened_gateway: ServerProcess) -> None:
    alpha, bravo = ENV_KEYS
    per_key_before = _metric(hardened_gateway, 'voice_gateway_streams_rejected_total{limit="per_key"}')
    a1, a2 = _open(hardened_gateway, alpha), _open(hardened_gateway, alpha)
    try:
        assert _alive(a1) and _alive(a2)
        with _open(hardened_gateway, alpha) as a3:
            code, reason = _closed(a3)
        assert code == 1013 and "API key" in reason and "2" in reason, (code, reason)
        with _open(hardened_gateway, bravo) as b1:
            assert _alive(b1)  # another key still fits: three streams in total
            with _open(hardened_gateway, FILE_KEY) as c1:
                code, reason = _closed(c1)
            assert code == 1013 and "gateway limit is 3" in reason, (code, reason)
            # HTTP work shares the slots: with all three held, a POST is told to come back.
            busy = httpx.post(
                hardened_gateway.url + "/read",
                headers={"Authorization": f"Bearer {FILE_KEY}"},
                json={"text": "Hello."},
            )
            assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "too_many_requests"
            assert "gateway limit is 3" in busy.json()["error"]["message"]
        a1.close()
        deadline = time.monotonic() + 10
        while True:  # the slot frees once the server has seen the close
            with _open(hardened_gateway, alpha) as a4:
                try:
                    assert _alive(a4)
                    break
                except ConnectionClosed:
                    assert time.monotonic() < deadline, "the slot of a closed session never came back"
                    time.sleep(0.2)
        assert _alive(a2)
    finally:
        a1.close()
        a2.close()
    after = _metric(hardened_gateway, 'voice_gateway_streams_rejected_total{limit="per_key"}')
    assert after >= per_key_before + 1


def test_idle_websocket_is_closed_with_a_reason(hardened_gateway: ServerProcess) -> None:
    with _open(hardened_gateway, ENV_KEYS[1]) as busy, _open(hardened_gateway, ENV_KEYS[1]) as idle:
        # One client keeps talking for longer than the timeout; the other says nothing.
        end = time.monotonic() + IDLE_SECONDS * 2
        while time.monotonic() < end:
            assert _alive(busy)
            time.sleep(IDLE_SECONDS / 4)
        code, reason = _closed(idle, timeout=IDLE_SECONDS * 5)
        assert code == 1001 and reason.startswith("idle"), (code, reason)
        assert _alive(busy)


def test_oversized_message_closes_1009_and_server_stays_up(hardened_gateway: ServerProcess) -> None:
    with _open(hardened_gateway, ENV_KEYS[0]) as ws:
        ws.send(json.dumps({"type": "start", "text": "x" * (WS_MAX_BYTES * 2)}))
        code, _ = _closed(ws)
    assert code == 1009
    with _open(hardened_gateway, ENV_KEYS[0]) as ws:
        assert _alive(ws)
    assert httpx.get(hardened_gateway.url + "/health").status_code == 200
