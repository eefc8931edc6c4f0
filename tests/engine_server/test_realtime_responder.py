"""The opt-in realtime Responder (OMNI_REALTIME=on, vLLM-Omni >= 0.29) against a real server that speaks the
OpenAI Realtime GA schema: the embedded gateway's own /v1/realtime (the session `gateway` fixture)."""

from __future__ import annotations

import httpx
import numpy as np

from gateway.audio.pcm import pcm16_to_float, read_wav
from gateway.engines.base import ChatMessage, ConversationRequest, ModelState
from gateway.engines.vllm_omni.backend import BackendClient, BackendConfig, BackendError
from gateway.engines.vllm_omni.realtime import VllmOmniRealtimeResponder
from gateway.errors import engine_status
from tests.support import ServerProcess, speech_ratio


async def test_ga_realtime_turn_with_history(gateway: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        served = (await http.get(gateway.url + "/v1/models")).json()["data"][0]["id"]
        wav = read_wav(
            (await http.post(gateway.url + "/read", json={"text": "What is the capital of France?"})).content
        )
    backend = BackendClient(
        BackendConfig("omni", gateway.url, model=served, read_timeout=60, total_timeout=120)
    )
    responder = VllmOmniRealtimeResponder(backend, gateway.ws_url, 24000, speaker="ethan")
    try:
        await responder.start()
        assert responder.state is ModelState.READY
        request = ConversationRequest(
            history=[ChatMessage("user", "Hello."), ChatMessage("assistant", "Hi! How can I help?")],
            audio=pcm16_to_float(wav.pcm),
            audio_rate=24000,
            voice="default",
            max_tokens=40,
        )
        events = [e async for e in responder.respond(request)]
        text = "".join(e.text for e in events if e.kind == "text")
        audio = b"".join(e.pcm for e in events if e.kind == "audio")
        assert text.strip() and events[-1].kind == "usage" and events[-1].completion_tokens > 0
        samples = np.frombuffer(audio, "<i2").astype(np.float32) / 32768.0
        assert samples.size > 24000 and speech_ratio(samples, 24000) > 0.2  # the server's own speech
        assert backend.stats.requests.get("ok") == 1
    finally:
        await responder.aclose()


async def test_a_server_without_realtime_is_a_clear_error(gateway: ServerProcess) -> None:
    """The HTTP side is up but the WebSocket path answers 404: a 502 naming the backend, not a hang."""
    async with httpx.AsyncClient(timeout=60) as http:
        served = (await http.get(gateway.url + "/v1/models")).json()["data"][0]["id"]
    backend = BackendClient(BackendConfig("omni", gateway.url, model=served, connect_timeout=2))
    responder = VllmOmniRealtimeResponder(backend, gateway.ws_url + "/nowhere", 24000)
    try:
        await responder.start()
        try:
            [e async for e in responder.respond(ConversationRequest(history=[ChatMessage("user", "hi")]))]
        except BackendError as err:
            assert engine_status(err) == 502 and err.backend == "omni"
        else:
            raise AssertionError("expected a BackendError")
    finally:
        await responder.aclose()
