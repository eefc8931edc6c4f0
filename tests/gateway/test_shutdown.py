"""Graceful shutdown of a real gateway process on SIGTERM: the listener closes, an open WebSocket session
is told 1001 with a reason, an in-flight HTTP request still completes with its whole audio, clean exit."""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import ServerProcess, decode_wav

SENTENCE = (
    "The gateway finishes what it started before it stops, and tells every listener to come back later. "
)


def test_sigterm_closes_websockets_1001_and_finishes_http() -> None:
    server = ServerProcess("serve", env={"SHUTDOWN_GRACE_SECONDS": "30"})
    try:
        server.wait_ready()
        ws = connect(server.ws_url + "/read/stream")
        ws.send(json.dumps({"type": "start", "text": SENTENCE * 30}))
        assert json.loads(ws.recv(timeout=30))["type"] == "started"

        result: dict[str, httpx.Response] = {}
        posted = threading.Event()

        def post() -> None:
            with httpx.Client(timeout=120) as c:
                posted.set()
                result["r"] = c.post(server.url + "/read", json={"text": SENTENCE * 12})

        worker = threading.Thread(target=post)
        worker.start()
        posted.wait()
        # Wait until the server is working on it: the stream's audio keeps arriving meanwhile.
        for _ in range(20):
            ws.recv(timeout=30)
        server.proc.send_signal(signal.SIGTERM)

        with pytest.raises(ConnectionClosed) as info:
            while True:
                ws.recv(timeout=30)
        assert info.value.rcvd is not None
        assert info.value.rcvd.code == 1001 and "shutting down" in info.value.rcvd.reason
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.url + "/health", timeout=5)

        worker.join(timeout=120)
        response = result["r"]
        assert response.status_code == 200
        audio = decode_wav(response.content)
        assert audio.duration > 30  # the whole text, not a truncated answer
        # uvicorn re-raises the signal once it has shut down cleanly, as a process stopped by it should.
        assert server.proc.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        server.stop()
    records = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.startswith("{")]
    order = [r["msg"] for r in records if r["msg"] == "draining" or r.get("path") == "/read"]
    assert order == ["draining", "http request"], order  # the POST was still in flight when draining began
    drain = next(r for r in records if r["msg"] == "draining")
    assert drain["websockets_closed"] == 1 and drain["websockets_left"] == 0
    assert any(r["msg"] == "stopped" for r in records)  # lifespan ran: engines closed
