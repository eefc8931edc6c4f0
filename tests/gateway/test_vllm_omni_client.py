"""Conformance of the vllm-omni clients: they parse answers built exactly like the fact sheet's examples,
served over real HTTP by tests/gateway/vllm_omni_fault_server.py, and know vLLM-Omni's load-time behaviour."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator

import numpy as np
import pytest

from gateway.audio.pcm import wav_bytes
from gateway.engines.base import ChatMessage, ConversationRequest, ModelState, SynthesisRequest
from gateway.engines.vllm_omni.audio import PcmJoiner, change_tempo
from gateway.engines.vllm_omni.backend import BackendClient, BackendConfig, BackendError, CircuitBreaker
from gateway.engines.vllm_omni.omni import VllmOmniResponder, VllmOmniTranscriber
from gateway.engines.vllm_omni.protocol import (
    DONE,
    ProtocolError,
    decode_wav_b64,
    parse_chat_response,
    parse_sse_data,
    parse_stream_chunk,
)
from gateway.engines.vllm_omni.tts import VllmOmniSynthesizer
from tests.gateway.vllm_omni_fault_server import MODEL, FaultServer, chat_chunks, chat_full, tone


@pytest.fixture(scope="module")
def server() -> Iterator[FaultServer]:
    srv = FaultServer()
    yield srv
    srv.release_stalls()
    srv.close()


@pytest.fixture(autouse=True)
def _reset(server: FaultServer) -> None:
    server.release_stalls()
    server.set_mode("ok")


def client(server: FaultServer, name: str = "omni", **kw: float) -> BackendClient:
    cfg = {
        "connect_timeout": 0.5,
        "read_timeout": 1.0,
        "total_timeout": 3.0,
        "retries": 1,
        "backoff": 0.05,
        "breaker_threshold": 2,
        "breaker_reset": 0.3,
        "poll_interval": 60.0,
        **kw,
    }
    return BackendClient(BackendConfig(name=name, url=server.url, **cfg))  # type: ignore[arg-type]


# -- parsers on the fact sheet's examples ------------------------------------------------------


def test_non_streaming_choices_are_picked_by_content_in_either_order() -> None:
    audio = tone(0.5)
    for audio_first in (False, True):
        body = chat_full("Hello! How can I help?", audio, audio_first=audio_first)
        assert [c["index"] for c in body["choices"]] == [0, 0]
        result = parse_chat_response(json.loads(json.dumps(body)))
        assert result.text == "Hello! How can I help?"
        assert result.audio_b64 is not None
        wav = decode_wav_b64(result.audio_b64)
        assert (wav.sample_rate, wav.pcm) == (24000, audio)
        assert result.usage == {"prompt_tokens": 120, "completion_tokens": 9, "total_tokens": 129}


def test_sse_chunks_are_classified_by_modality() -> None:
    pieces = [tone(0.32), tone(2.0, 330)]
    events = [parse_sse_data(raw.decode().strip()) for raw in chat_chunks(["Hello"], pieces)]
    assert events[-1] == DONE
    chunks = [parse_stream_chunk(e) for e in events[:-1]]  # type: ignore[arg-type]
    assert [c.modality for c in chunks if c] == ["text", "text", "audio", "audio"]
    assert chunks[0].text == "" and chunks[1].text == "Hello"  # type: ignore[union-attr]
    audio = [decode_wav_b64(c.audio_b64) for c in chunks if c and c.modality == "audio"]
    assert b"".join(a.pcm for a in audio) == b"".join(pieces)
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage["completion_tokens"] == 0  # type: ignore[union-attr,index]
    assert parse_sse_data("") is None and parse_sse_data(": keep-alive") is None
    with pytest.raises(ProtocolError):
        parse_sse_data('data: {"choices": [')
    with pytest.raises(ProtocolError):
        parse_stream_chunk({"error": {"message": "engine died"}})


def test_truncated_and_foreign_audio_chunks_are_rejected() -> None:
    wav = wav_bytes(tone(0.2), 24000)
    with pytest.raises(ProtocolError, match="truncated"):
        decode_wav_b64(base64.b64encode(wav[:-100]).decode())
    with pytest.raises(ProtocolError):
        decode_wav_b64(base64.b64encode(b"ID3\x03mp3 bytes").decode())
    with pytest.raises(ProtocolError):
        decode_wav_b64("not base64 !!")


def test_joiner_carries_split_samples_and_resamples_continuously() -> None:
    pcm = tone(0.5, rate=16000)
    joiner = PcmJoiner(24000)
    out = b"".join(joiner.push(pcm[i : i + 333], 16000) for i in range(0, len(pcm), 333)) + joiner.finish()
    whole = np.frombuffer(out, "<i2").astype(np.float32)
    assert abs(whole.size - 12000) < 50
    # No click at the seams: the largest step between samples stays that of a clean 440 Hz tone.
    assert np.max(np.abs(np.diff(whole))) < 0.3 * 32767 * 2 * np.pi * 440 / 24000 * 1.5
    joiner = PcmJoiner(24000)
    joiner.push(b"\x01\x02\x03", 24000)
    with pytest.raises(ValueError):
        joiner.finish()


def test_tempo_changes_duration_not_pitch() -> None:
    pcm = tone(2.0, 300)
    fast = np.frombuffer(change_tempo(pcm, 24000, 2.0), "<i2").astype(np.float32)
    assert abs(fast.size / 24000 - 1.0) < 0.05
    spectrum = np.abs(np.fft.rfft(fast))
    assert abs(np.argmax(spectrum) * 24000 / fast.size - 300) < 10


def test_breaker_opens_after_threshold_and_one_probe_closes_it() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, reset=5.0, clock=lambda: now[0])
    for _ in range(3):
        assert breaker.allow()
        breaker.failure()
    assert not breaker.allow() and breaker.opened_total == 1
    now[0] = 5.1
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one probe at a time
    breaker.failure()  # the probe failed: open again
    assert not breaker.allow()
    now[0] = 10.3
    assert breaker.allow()
    breaker.success()
    assert breaker.allow() and breaker.allow()


# -- the clients over real HTTP ----------------------------------------------------------------


async def test_refused_connection_during_load_is_loading_then_ready(server: FaultServer) -> None:
    server.set_mode("refuse")
    backend = client(server)
    try:
        await backend.poll_once()
        assert backend.state is ModelState.LOADING and "refused" in (backend.detail or "")
        with pytest.raises(BackendError) as err:
            await backend.request_json("GET", "/v1/models")
        assert (err.value.status, err.value.code, err.value.backend) == (503, "backend_loading", "omni")
        server.set_mode("loading")  # listening, but /health says 503 No engine initialized
        await backend.poll_once()
        assert backend.state is ModelState.LOADING
        server.set_mode("unhealthy")
        await backend.poll_once()
        assert backend.state is ModelState.UNAVAILABLE
        server.set_mode("ok")
        await backend.poll_once()
        assert backend.state is ModelState.READY and backend.model_id == MODEL
    finally:
        await backend.aclose()


async def test_configured_model_must_be_served(server: FaultServer) -> None:
    backend = client(server, model="some/other-model")  # type: ignore[arg-type]
    try:
        await backend.poll_once()
        assert backend.state is ModelState.FAILED and MODEL in (backend.detail or "")
    finally:
        await backend.aclose()


async def test_responder_streams_text_and_joined_audio_with_history(server: FaultServer) -> None:
    backend = client(server)
    responder = VllmOmniResponder(backend, 24000, tts=None, speaker="chelsie")
    try:
        await backend.poll_once()
        request = ConversationRequest(
            history=[ChatMessage("user", "Hi"), ChatMessage("assistant", "Hello."), ChatMessage("user", "x")],
            audio=np.zeros(16000, np.float32),
        )
        events = [e async for e in responder.respond(request)]
        text = "".join(e.text for e in events if e.kind == "text")
        audio = b"".join(e.pcm for e in events if e.kind == "audio")
        assert text == "".join(server.reply_text)
        assert audio == b"".join(server.reply_audio)
        assert events[-1].kind == "usage" and events[-1].completion_tokens == len(server.reply_text)
        sent = server.last_bodies["/v1/chat/completions"]
        assert sent["modalities"] == ["text", "audio"] and sent["speaker"] == "chelsie"
        assert sent["stream"] is True and sent["model"] == MODEL
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "user", "assistant", "user"]
        assert sent["messages"][-1]["content"][0]["type"] == "input_audio"
        assert sent["messages"][-1]["content"][0]["input_audio"]["format"] == "wav"
    finally:
        await backend.aclose()


async def test_responder_falls_back_to_tts_when_omni_has_no_audio(server: FaultServer) -> None:
    server.set_mode("no_audio")
    omni = client(server)
    tts_backend = client(server, name="tts")
    synth = VllmOmniSynthesizer(tts_backend, 24000)
    responder = VllmOmniResponder(omni, 24000, tts=synth)
    try:
        await omni.poll_once()
        await tts_backend.poll_once()
        events = [
            e async for e in responder.respond(ConversationRequest(history=[ChatMessage("user", "hi")]))
        ]
        assert "".join(e.text for e in events if e.kind == "text") == "".join(server.reply_text)
        assert sum(len(e.pcm) for e in events if e.kind == "audio") > 0  # spoken by the TTS server
        assert server.hits["POST /v1/audio/speech"] >= 1
        # Learned: later turns ask Omni for text only and speak it with TTS as it streams.
        [e async for e in responder.respond(ConversationRequest(history=[ChatMessage("user", "again")]))]
        assert server.last_bodies["/v1/chat/completions"]["modalities"] == ["text"]
    finally:
        await omni.aclose()
        await tts_backend.aclose()


async def test_transcriber_sends_asr_instruction_text_only(server: FaultServer) -> None:
    backend = client(server)
    asr = VllmOmniTranscriber(backend)
    try:
        await backend.poll_once()
        result = await asr.transcribe(np.zeros(32000, np.float32), "en")
        assert result.text == "".join(server.reply_text) and result.duration == 2.0
        sent = server.last_bodies["/v1/chat/completions"]
        assert sent["modalities"] == ["text"] and sent["stream"] is False and "speaker" not in sent
        parts = sent["messages"][0]["content"]
        assert parts[0]["type"] == "input_audio" and "ASR" in parts[1]["text"]
        server.set_mode("malformed_json")
        with pytest.raises(BackendError) as err:
            await asr.transcribe(np.zeros(16000, np.float32))
        assert (err.value.status, err.value.code) == (502, "backend_bad_response")
    finally:
        await backend.aclose()


async def test_synthesizer_builtin_voice_and_faults(server: FaultServer) -> None:
    backend = client(server, name="tts")
    synth = VllmOmniSynthesizer(backend, 24000)
    try:
        await backend.poll_once()
        assert [v.id for v in synth.voices()] == ["vivian"]
        request = synth.resolve(SynthesisRequest(text="One. Two.", voice="default", language="English"))
        chunks = [c async for c in synth.stream(request)]
        assert [c.index for c in chunks] == [0, 1] and all(len(c.pcm) == len(tone(0.6)) for c in chunks)
        sent = server.last_bodies["/v1/audio/speech"]
        assert sent["stream"] is True and sent["response_format"] == "pcm" and "speed" not in sent
        assert sent["voice"] == "vivian" and sent["language"] == "English"
        ids = server.request_ids[-2:]  # X-Request-Id: vLLM's request id, unique per backend call
        assert all(i.startswith("gw-tts-") for i in ids) and len(set(ids)) == 2
        expected = {"http500": 502, "truncated_audio": 502, "stall_before": 504, "stall_mid": 504}
        for mode, status in expected.items():
            server.set_mode(mode)
            with pytest.raises(BackendError) as err:
                [c async for c in synth.stream(request)]
            assert err.value.status == status, mode
            assert err.value.backend == "tts"
            server.release_stalls()
            backend.breaker.success()
    finally:
        await backend.aclose()


def test_realtime_ws_only_for_servers_that_speak_the_ga_schema() -> None:
    from gateway.engines.vllm_omni import realtime_ws_supported

    assert [
        realtime_ws_supported(v) for v in ("0.29.0", "v0.30.1rc2", "1.0", "0.28.9", "0.22.0rc1", "", "main")
    ] == [True, True, True, False, False, False, False]


async def test_a_caller_leaving_closes_the_backend_stream_at_once(server: FaultServer) -> None:
    server.set_mode("slow_stream")
    backend = client(server, name="tts", total_timeout=30.0)
    synth = VllmOmniSynthesizer(backend, 24000)
    try:
        await backend.poll_once()
        aborted = server.aborted
        async with backend.stream("POST", "/v1/audio/speech", json_body={"input": "x"}) as resp:
            async for _ in resp.iter_bytes():
                break  # the caller goes away after the first bytes
        for _ in range(100):
            if server.aborted > aborted:
                break
            await asyncio.sleep(0.05)
        assert server.aborted == aborted + 1  # the server saw the connection close mid-stream
        assert backend.breaker.allow()  # leaving is not a backend failure
        # The same through the Synthesizer: closing its iterator cancels the sentences in flight.
        gen = synth.stream(SynthesisRequest(text="One. Two. Three.", voice="vivian", language="en"))
        server.set_mode("ok")
        first = await gen.__anext__()
        assert first.index == 0
        await gen.aclose()
    finally:
        await backend.aclose()


async def test_api_key_as_vllm_checks_it() -> None:
    """The engine server's `--api-key` guards /v1 like vLLM's; the client sends OMNI_API_KEY / TTS_API_KEY."""
    import httpx

    from gateway.engine_server.app import create_engine_app
    from gateway.engine_server.models import EngineSet
    from gateway.settings import load_settings

    engine_set = EngineSet(load_settings())  # models are not loaded: /v1/models and /health need none
    app = create_engine_app(engine_set, api_key="s3cret")
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://es") as http:
            denied = await http.get("/v1/models")
            assert denied.status_code == 401 and denied.json() == {"error": "Unauthorized"}
            assert (await http.get("/health")).status_code == 503  # open, and still loading
        for key, state in (("s3cret", ModelState.LOADING), ("wrong", ModelState.LOADING)):
            cfg = BackendConfig(name="tts", url="http://es", api_key=key)
            backend = BackendClient(cfg, transport=httpx.ASGITransport(app=app))
            try:
                await backend.poll_once()
                assert backend.state is state  # /health says loading either way
                if key == "s3cret":
                    assert (await backend.request_json("GET", "/v1/models"))["object"] == "list"
                else:
                    with pytest.raises(BackendError) as err:
                        await backend.request_json("GET", "/v1/models")
                    assert err.value.status == 502 and "401" in err.value.message
                assert "s3cret" not in repr(cfg)
            finally:
                await backend.aclose()
    finally:
        await engine_set.aclose()
