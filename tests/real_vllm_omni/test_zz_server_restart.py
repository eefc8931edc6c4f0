"""The real TTS server killed in the middle of a stream: the client gets a clear error, the gateway stays up,
and everything works again once the server is back (same port, a fresh process that has forgotten its voices).

Last in the package (it costs a server start, 1.5-3 minutes on 2 cores).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import websockets

from tests.gateway.test_read_stream import Client
from tests.real_vllm_omni.conftest import RealServers
from tests.real_vllm_omni_server import RealVllmOmni
from tests.support import ServerProcess, decode_wav

LONG = " ".join(f"Sentence number {n} keeps the server busy." for n in range(1, 13))


async def test_killed_mid_stream_is_a_clear_error_and_recovery_follows(
    real_gateway: ServerProcess, real_servers: RealServers
) -> None:
    tts = real_servers.tts
    if tts.proc is None:
        pytest.skip("attached to a developer's server (VGW_REAL_TTS_URL): not ours to kill")
    async with websockets.connect(real_gateway.ws_url + "/read/stream", max_size=None) as ws:
        c = Client(ws)
        await c.send("start", text=LONG)
        await c.until("started")
        await c.first_audio()
        tts.kill()  # SIGKILL to the whole process group: API server, engine cores, stage workers
        event = await c.until("error", "complete")
        assert event["type"] == "error", event
        assert event["code"].startswith("backend_") and "tts" in event["message"], event
        # The session survives the backend's death: it still answers.
        await c.send("ping")
        pong = await c.until("pong")
        assert pong["state"] == "idle"

    # While the server is down: a clear 503 JSON naming the backend, and /health says so.
    async with httpx.AsyncClient(timeout=300) as http:
        r = await http.post(real_gateway.url + "/read", json={"text": "Hello."})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"].startswith("backend_")
        # /health follows the backend poller (BACKEND_POLL_INTERVAL=1 here): 503 within a few polls.
        deadline = time.monotonic() + 15
        while (await http.get(real_gateway.url + "/health")).status_code != 503:
            assert time.monotonic() < deadline, "/health still 200 with the TTS server dead"
            await asyncio.sleep(0.5)

    # The server comes back on the same address, as a Kubernetes restart would bring it.
    again = RealVllmOmni(tts.spec, port=tts.port).start()
    try:
        await asyncio.to_thread(again.wait_ready)
        async with httpx.AsyncClient(timeout=300) as http:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if (await http.get(real_gateway.url + "/health")).status_code == 200:
                    break
                await asyncio.sleep(1)
            body = {"text": "Hello again.", "voice": "narrator"}
            r = await http.post(real_gateway.url + "/read", json=body)
            assert r.status_code == 200, r.text
            assert decode_wav(r.content).duration > 2
            # Registered again on reconnect: the new process had forgotten every uploaded voice.
            listing = (await http.get(again.url + "/v1/audio/voices")).json()
            assert "narrator" in [v["name"] for v in listing["uploaded_voices"]]
    finally:
        again.stop()
