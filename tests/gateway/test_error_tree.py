"""One error tree, mapped once at each edge: every client-facing error is a `GatewayError`, and one engine
error reads the same (code and message) over HTTP, /read/stream, /voice and /v1/realtime."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets

import gateway.security  # noqa: F401 - before gateway.limits, which it imports (their import cycle)
from gateway.engines.errors import (
    BackendError,
    EngineNotReadyError,
    SynthesisFailedError,
    UnknownVoiceError,
    UnsupportedLanguageError,
)
from gateway.errors import APIError, GatewayError, error_event, error_response
from gateway.limits import LimitExceeded
from gateway.request_body import BodyRejected
from gateway.sessions.realtime.protocol import RealtimeError
from gateway.sessions.realtime.wire import Wire
from gateway.sessions.voice.errors import VoiceError
from tests.support import ServerProcess

WAIT_S = 60  # a bound for a loaded machine; never reached when things work

# (error, HTTP status, code, extra fields of the body): the statuses the public API has always given.
CASES: list[tuple[GatewayError, int, str, dict[str, Any]]] = [
    (APIError(413, "text_too_long", "too long", limit=5), 413, "text_too_long", {"limit": 5}),
    (EngineNotReadyError("tts"), 503, "engine_unavailable", {"component": "tts"}),
    (UnknownVoiceError("no such voice", available=["a"]), 400, "unknown_voice", {}),
    (UnsupportedLanguageError("no", component="asr"), 400, "unsupported_language", {}),
    (SynthesisFailedError("worker died", retryable=True), 503, "synthesis_failed", {}),
    (SynthesisFailedError("refused", retryable=False), 422, "synthesis_rejected", {}),
    (BackendError("backend_timeout", "omni", "slow"), 504, "backend_timeout", {"backend": "omni"}),
    (
        BackendError("backend_rejected", "omni", "400", upstream_status=400),
        502,
        "backend_rejected",
        {"backend": "omni", "backend_status": 400},
    ),
    (BackendError("backend_loading", "omni", "loading"), 503, "backend_loading", {"backend": "omni"}),
    (LimitExceeded("too many concurrent streams"), 429, "too_many_requests", {}),
    (BodyRejected(408, "request_timeout", "slow body"), 408, "request_timeout", {}),
    (VoiceError("no_active_response", "nothing to interrupt"), 400, "no_active_response", {}),
    (RealtimeError("item_not_found", "no item", param="item_id"), 400, "item_not_found", {}),
]


@pytest.mark.parametrize(("err", "status", "code", "extra"), CASES, ids=lambda c: getattr(c, "code", None))
def test_every_client_error_is_a_gateway_error_with_its_public_status(
    err: GatewayError, status: int, code: str, extra: dict[str, Any]
) -> None:
    assert isinstance(err, GatewayError)
    response = error_response(err)
    assert response.status_code == status
    assert json.loads(response.body) == {"error": {"code": code, "message": err.message, **extra}}
    assert error_event(err) == {"type": "error", "code": code, "message": err.message, **extra}


def test_the_realtime_edge_speaks_openai_codes_and_hides_server_faults() -> None:
    core = RealtimeError.of(VoiceError("empty_audio_buffer", "nothing to commit"))
    assert (core.code, core.message, core.type) == (
        "input_audio_buffer_commit_empty",
        "nothing to commit",
        "invalid_request_error",
    )
    engine = RealtimeError.of(UnknownVoiceError("no such voice"), param="session")
    assert (engine.code, engine.param) == ("unknown_voice", "session")
    fault = RealtimeError.of(KeyError("secret detail"))
    assert (fault.code, fault.type) == ("internal_error", "server_error")
    assert "secret" not in fault.message
    own = RealtimeError("item_not_found", "no item", param="item_id", event_id="ev_1")
    assert RealtimeError.of(own) is own
    event = Wire.error(own)
    assert event["error"] == {
        "type": "invalid_request_error",
        "code": "item_not_found",
        "message": "no item",
        "param": "item_id",
        "event_id": "ev_1",
    }
    assert (event["code"], event["message"]) == ("item_not_found", "no item")


async def _first_error(ws: websockets.ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT_S):
        while True:
            message = await ws.recv()
            if isinstance(message, str) and (event := json.loads(message))["type"] == "error":
                return event


async def test_one_engine_error_reads_the_same_at_every_edge(gateway: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=WAIT_S) as http:
        r = await http.post("/read", json={"text": "Hello.", "voice": "nobody"})
    assert r.status_code == 400
    http_error = r.json()["error"]
    assert http_error["code"] == "unknown_voice"

    async with websockets.connect(gateway.ws_url + "/read/stream") as ws:
        await ws.send(json.dumps({"type": "start", "text": "Hello.", "voice": "nobody"}))
        stream_error = await _first_error(ws)
    async with websockets.connect(gateway.ws_url + "/voice") as ws:
        await ws.send(json.dumps({"type": "session.update", "session": {"voice": "nobody"}}))
        voice_error = await _first_error(ws)
    async with websockets.connect(gateway.ws_url + "/v1/realtime") as ws:
        update = {
            "type": "session.update",
            "event_id": "ev_v",
            "session": {"type": "realtime", "voice": "nobody"},
        }
        await ws.send(json.dumps(update))
        realtime_error = await _first_error(ws)

    for event in (stream_error, voice_error):
        assert (event["code"], event["message"]) == (http_error["code"], http_error["message"]), event
    assert realtime_error["error"]["code"] == http_error["code"]
    assert realtime_error["error"]["message"] == http_error["message"]
    assert (realtime_error["error"]["param"], realtime_error["error"]["event_id"]) == ("session", "ev_v")
