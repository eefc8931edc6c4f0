"""Fault injection: a real gateway (VOICE_ENGINE=vllm-omni) in front of a real misbehaving HTTP server.

Every fault must give the documented client error within the configured timeouts (the client's own timeout
below is the "nothing hangs" bound), the breaker must open and close again, and /metrics must count it all.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.gateway.vllm_omni_fault_server import FaultServer
from tests.support import ServerProcess

CONNECT_S, READ_S, TOTAL_S, RESET_S = 0.5, 1.5, 4.0, 1.5
# A request may take one read timeout plus a retry's connect attempts; anything near this bound is a hang.
HANG_BOUND = TOTAL_S + 6


@pytest.fixture(scope="module")
def fault() -> Iterator[FaultServer]:
    server = FaultServer()
    server.stall_s = 20
    yield server
    server.release_stalls()
    server.close()


@pytest.fixture(scope="module")
def gw(fault: FaultServer) -> Iterator[ServerProcess]:
    server = ServerProcess(
        "serve",
        env={
            "VOICE_ENGINE": "vllm-omni",
            "OMNI_SERVICE_URL": fault.url,
            "TTS_SERVICE_URL": fault.url,
            "BACKEND_CONNECT_TIMEOUT": str(CONNECT_S),
            "BACKEND_READ_TIMEOUT": str(READ_S),
            "BACKEND_TOTAL_TIMEOUT": str(TOTAL_S),
            "BACKEND_RETRIES": "1",
            "BACKEND_BREAKER_THRESHOLD": "3",
            "BACKEND_BREAKER_RESET": str(RESET_S),
            "BACKEND_POLL_INTERVAL": "0.3",
        },
    )
    try:
        server.wait_ready(timeout=60)
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def healthy_again(fault: FaultServer, gw: ServerProcess) -> Iterator[None]:
    yield
    fault.release_stalls()
    fault.set_mode("ok")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the breaker's probe closes it once the server behaves
        if read(gw).status_code == 200:
            return
        time.sleep(0.3)
    raise AssertionError("the gateway did not recover after the fault was removed")


def read(gw: ServerProcess, text: str = "Hello there.") -> httpx.Response:
    return httpx.post(gw.url + "/read", json={"text": text, "voice": "vivian"}, timeout=HANG_BOUND)


def transcribe(gw: ServerProcess) -> httpx.Response:
    wav = read(gw).content
    return httpx.post(
        gw.url + "/voice/transcribe", files={"audio": ("a.wav", wav, "audio/wav")}, timeout=HANG_BOUND
    )


def error(r: httpx.Response) -> tuple[int, str, str]:
    body = r.json()["error"]
    return r.status_code, body["code"], body["backend"]


def metric(gw: ServerProcess, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def test_500_is_502_naming_the_backend(fault: FaultServer, gw: ServerProcess) -> None:
    fault.set_mode("http500")
    r = read(gw)
    assert error(r) == (502, "backend_bad_response", "tts") and "boom" in r.json()["error"]["message"]
    assert metric(gw, "voice_gateway_backend_failures_total", backend="tts", code="backend_bad_response") >= 1


def test_a_refused_request_is_502_with_the_servers_status_and_message(
    fault: FaultServer, gw: ServerProcess
) -> None:
    """A 4xx from vLLM-Omni (here its real answer to a raw-base64 `ref_audio`) is the gateway's 502
    `backend_rejected`, naming the backend, its status and its message; the breaker does not count it."""
    fault.set_mode("reject_speech")
    r = read(gw)
    assert error(r) == (502, "backend_rejected", "tts")
    body = r.json()["error"]
    assert body["backend_status"] == 400 and "ref_audio must be a URL (http/https)" in body["message"]
    assert metric(gw, "voice_gateway_backend_circuit_open", backend="tts") == 0


def test_models_show_the_server_version(gw: ServerProcess) -> None:
    models = httpx.get(gw.url + "/models").json()["models"]
    assert {m["role"]: m.get("detail") for m in models} == dict.fromkeys(
        ("tts", "asr", "omni"), "server version 0.30.0"
    )


def test_stall_before_the_response_is_504(fault: FaultServer, gw: ServerProcess) -> None:
    fault.set_mode("stall_before")
    assert error(read(gw)) == (504, "backend_timeout", "tts")


def test_stall_mid_stream_is_504(fault: FaultServer, gw: ServerProcess) -> None:
    fault.set_mode("stall_mid")
    r = read(gw)
    assert error(r) == (504, "backend_timeout", "tts") and "mid-response" in r.json()["error"]["message"]


def test_truncated_audio_is_502(fault: FaultServer, gw: ServerProcess) -> None:
    fault.set_mode("truncated_audio")
    r = read(gw)
    assert error(r) == (502, "backend_bad_response", "tts") and "truncated" in r.json()["error"]["message"]


def test_malformed_json_from_omni_is_502(fault: FaultServer, gw: ServerProcess) -> None:
    fault.set_mode("malformed_json")
    assert error(transcribe(gw)) == (502, "backend_bad_response", "omni")


def test_refused_connections_read_as_loading(fault: FaultServer, gw: ServerProcess) -> None:
    fault.set_mode("refuse")
    deadline = time.monotonic() + 10
    health = httpx.get(gw.url + "/health")
    while health.json()["status"] != "loading" and time.monotonic() < deadline:
        time.sleep(0.2)
        health = httpx.get(gw.url + "/health")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    assert health.json()["components"]["tts"]["state"] == "loading"
    assert error(read(gw)) == (503, "backend_loading", "tts")


def test_breaker_opens_fails_fast_and_closes(fault: FaultServer, gw: ServerProcess) -> None:
    opened_before = metric(gw, "voice_gateway_backend_circuit_opened_total", backend="tts")
    fault.set_mode("http500")
    for _ in range(3):
        assert read(gw).status_code == 502
    hits = fault.hits["POST /v1/audio/speech"]
    r = read(gw)
    assert error(r) == (503, "backend_circuit_open", "tts")
    assert fault.hits["POST /v1/audio/speech"] == hits  # failed fast: the backend was not even asked
    assert metric(gw, "voice_gateway_backend_circuit_open", backend="tts") == 1
    assert metric(gw, "voice_gateway_backend_circuit_opened_total", backend="tts") == opened_before + 1
    assert metric(gw, "voice_gateway_backend_failures_total", backend="tts", code="backend_circuit_open") >= 1
    fault.set_mode("ok")
    time.sleep(RESET_S + 0.2)
    assert read(gw).status_code == 200  # the half-open probe succeeds and closes the breaker
    assert metric(gw, "voice_gateway_backend_circuit_open", backend="tts") == 0


async def test_voice_session_gets_an_error_event_and_stays_open(
    fault: FaultServer, gw: ServerProcess
) -> None:
    """A reply that stalls mid-stream: an `error` event (backend_timeout), then the next turn works."""
    from tests.gateway.voice_client import VoiceClient

    question = read(gw, "Is anybody there?").content[44:]
    client = await VoiceClient.connect(gw.ws_url, turn_detection=None)
    try:
        fault.set_mode("stall_mid")
        await client.stream(question)
        await client.send("audio.commit")
        err = await client.wait_for("error")
        assert err["code"] == "backend_timeout", err
        fault.release_stalls()
        fault.set_mode("ok")
        await client.send("ping")
        await client.wait_for("pong")
        await client.stream(question)
        await client.send("audio.commit")
        done = await client.wait_for("response.done")
        assert client.text_of(done["response_id"]) == "".join(fault.reply_text)
        assert len(client.audio) >= len(b"".join(fault.reply_audio)) * 0.9  # Omni's audio, joined
    finally:
        await client.close()
