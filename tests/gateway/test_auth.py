"""API keys on a real gateway: every HTTP route and WebSocket refuses a missing or wrong key (401 JSON,
close 1008), accepts each documented form, never reveals a key, and reloads the mounted key file."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.gateway.hardened import ENV_KEYS, FILE_KEY, ORIGIN
from tests.support import ServerProcess

KEY = ENV_KEYS[0]


def connect(url: str, **kwargs: Any) -> ClientConnection:
    # An unbounded client queue keeps reading while audio is still arriving, so closing mid-stream
    # sees the server's close frame at once instead of waiting out close_timeout behind buffered audio.
    return ws_connect(url, max_queue=None, **kwargs)


TEXT = "Keys keep the gateway closed to strangers."


def _closed(ws: ClientConnection) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as info:
        while True:
            ws.recv(timeout=15)
    assert info.value.rcvd is not None, "the server closed without a close frame"
    return info.value.rcvd.code, info.value.rcvd.reason


def _read_stream_works(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "start", "text": TEXT}))
    started = json.loads(ws.recv(timeout=30))
    assert started["type"] == "started", started
    while isinstance(message := ws.recv(timeout=60), str):  # marks come before the audio they mark
        assert json.loads(message)["type"] != "error", message
    assert len(message) > 0


def _operations(server: ServerProcess) -> list[tuple[str, str]]:
    spec = httpx.get(server.url + "/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    return [(m.upper(), p) for p, item in spec["paths"].items() for m in item if p != "/health"]


def test_every_http_route_refuses_missing_and_wrong_keys(hardened_gateway: ServerProcess) -> None:
    ops = _operations(hardened_gateway)
    assert ("GET", "/metrics") in ops and ("POST", "/read") in ops
    with httpx.Client(base_url=hardened_gateway.url, timeout=30) as c:
        assert c.get("/health").status_code == 200
        for method, path in [*ops, ("GET", "/openapi.json"), ("GET", "/docs")]:
            for headers, reason in (
                ({}, "missing API key"),
                ({"Authorization": "Bearer nope"}, "invalid API key"),
            ):
                r = c.request(method, path, headers=headers, json={"text": TEXT})
                assert r.status_code == 401, (method, path, r.status_code)
                assert r.json() == {"error": {"code": "unauthorized", "message": reason}}
                assert r.headers["www-authenticate"].startswith("Bearer")


def test_each_key_form_is_accepted(hardened_gateway: ServerProcess) -> None:
    with httpx.Client(base_url=hardened_gateway.url, timeout=60) as c:
        forms = [
            ({"Authorization": f"Bearer {ENV_KEYS[0]}"}, {}),
            ({"authorization": f"bearer {ENV_KEYS[1]}"}, {}),
            ({"X-API-Key": FILE_KEY}, {}),
            ({}, {"api_key": KEY}),
        ]
        for headers, params in forms:
            assert c.get("/models", headers=headers, params=params).status_code == 200, (headers, params)
        r = c.post("/read", headers={"Authorization": f"Bearer {KEY}"}, json={"text": TEXT})
        assert r.status_code == 200 and r.content[:4] == b"RIFF"


def test_websocket_refuses_without_key_with_1008(hardened_gateway: ServerProcess) -> None:
    url = hardened_gateway.ws_url + "/read/stream"
    for kwargs in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
        with connect(url, **kwargs) as ws:
            code, reason = _closed(ws)
        assert code == 1008 and reason.startswith("unauthorized"), (code, reason)


def test_websocket_key_forms(hardened_gateway: ServerProcess) -> None:
    url = hardened_gateway.ws_url + "/read/stream"
    with connect(
        url, additional_headers={"Authorization": f"Bearer {KEY}", "X-Request-ID": "ws-trace-1"}
    ) as ws:
        assert ws.response is not None and ws.response.headers["x-request-id"] == "ws-trace-1"
        _read_stream_works(ws)
    with connect(url + f"?api_key={FILE_KEY}") as ws:
        _read_stream_works(ws)
    # Browsers: the key rides in a subprotocol; the gateway selects the plain one, never echoing the key.
    with connect(url, subprotocols=["voice-gateway", f"bearer.{KEY}"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "voice-gateway"
        _read_stream_works(ws)
    with connect(url, subprotocols=[f"bearer.{KEY}"]) as ws:  # type: ignore[list-item]
        _read_stream_works(ws)
    with connect(url, subprotocols=["voice-gateway", "bearer.wrong"]) as ws:  # type: ignore[list-item]
        assert _closed(ws)[0] == 1008


def test_keys_are_never_shown_or_logged(hardened_gateway: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "X-Request-ID": "trace-me-123"}
    r = httpx.get(hardened_gateway.url + "/config", headers=auth)
    assert r.status_code == 200 and r.headers["x-request-id"] == "trace-me-123"
    config = r.json()["config"]
    assert config["GATEWAY_API_KEYS"] == "***"
    generated = httpx.get(hardened_gateway.url + "/health", headers={"X-Request-ID": "bad id\twith tab"})
    assert (
        generated.headers["x-request-id"] != "bad id\twith tab"
        and len(generated.headers["x-request-id"]) == 32
    )
    httpx.get(hardened_gateway.url + "/models", params={"api_key": KEY})
    time.sleep(0.5)  # the access line is written after the response
    log = hardened_gateway.log_path.read_text()
    for secret in (*ENV_KEYS, FILE_KEY):
        assert secret not in r.text and secret not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [rec for rec in lines if rec["logger"] == "gateway.access"]
    assert access and all(rec.get("request_id") for rec in access)
    traced = [rec for rec in access if rec["request_id"] == "trace-me-123"]
    assert traced and traced[0]["path"] == "/config" and traced[0]["status"] == 200
    assert traced[0]["key_id"].startswith("key-")
    assert all("api_key" not in rec["path"] for rec in access)


def test_metrics_can_require_a_key(hardened_gateway: ServerProcess, gateway: ServerProcess) -> None:
    assert httpx.get(hardened_gateway.url + "/metrics").status_code == 401
    r = httpx.get(hardened_gateway.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and "voice_gateway_asyncio_tasks" in r.text
    assert httpx.get(gateway.url + "/metrics").status_code == 200  # default: open for Prometheus


def test_cors_for_the_configured_origin_only(hardened_gateway: ServerProcess) -> None:
    pre = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    ok = httpx.options(hardened_gateway.url + "/read", headers=pre)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    bad = httpx.options(hardened_gateway.url + "/read", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in bad.headers
    # A 401 still carries CORS headers, so the page can read why it was refused.
    refused = httpx.get(hardened_gateway.url + "/models", headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN


def test_rotated_key_file_applies_without_restart(hardened_gateway: ServerProcess) -> None:
    key_file = hardened_gateway.key_file  # type: ignore[attr-defined]
    url = hardened_gateway.url + "/models"
    try:
        tmp = key_file.with_suffix(".new")
        tmp.write_text("file-key-delta\n")
        tmp.replace(key_file)  # atomic, as the kubelet swaps a mounted Secret
        assert httpx.get(url, headers={"X-API-Key": "file-key-delta"}).status_code == 200
        assert httpx.get(url, headers={"X-API-Key": FILE_KEY}).status_code == 401
        assert httpx.get(url, headers={"X-API-Key": KEY}).status_code == 200  # env keys stay
    finally:
        key_file.write_text(f"{FILE_KEY}\n")
    assert httpx.get(url, headers={"X-API-Key": FILE_KEY}).status_code == 200
