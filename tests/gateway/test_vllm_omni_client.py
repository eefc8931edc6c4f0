"""Conformance of the vllm-omni clients: they parse answers built like a real vLLM-Omni 0.30.0 server's (and
the older fact sheet's), served over real HTTP by tests/gateway/vllm_omni_fault_server.py, send what that
server accepts, map every refusal it gives to a clear error, and know vLLM-Omni's load-time behaviour."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterator

import numpy as np
import pytest

from gateway.audio.pcm import wav_bytes
from gateway.engines.base import (
    ChatMessage,
    ConversationRequest,
    EngineNotReadyError,
    ModelState,
    SynthesisChunk,
    SynthesisRequest,
)
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
from gateway.engines.vllm_omni.tts import VllmOmniSynthesizer, VoiceClip
from gateway.errors import engine_status, from_engine_error
from gateway.sessions.voice.events import AudioOut, VoiceEvent
from gateway.sessions.voice.pipeline import ResponseRun, ResponseTimings
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
    server.builtin = ["vivian"]
    server.forget()
    server.version = "0.30.0"
    server.served_model = MODEL


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


def sentences(chunks: list[SynthesisChunk]) -> list[tuple[int, bytes]]:
    """(index, audio) per sentence: the pieces a sentence streamed in are contiguous, the last one final."""
    out: list[tuple[int, bytes]] = []
    open_index: int | None = None
    for c in chunks:
        if open_index is None:
            out.append((c.index, b""))
        assert c.index == out[-1][0], [(x.index, x.final) for x in chunks]
        out[-1] = (c.index, out[-1][1] + c.pcm)
        open_index = None if c.final else c.index
    assert open_index is None, "the last sentence never ended with a final chunk"
    return out


# -- parsers on the fact sheet's examples ------------------------------------------------------


def test_non_streaming_choices_are_picked_by_content_in_either_order() -> None:
    """vLLM-Omni 0.30.0: one choice with content and audio; older releases: two choices with index 0."""
    audio = tone(0.5)
    for merged, audio_first in ((True, False), (False, False), (False, True)):
        body = chat_full("Hello! How can I help?", audio, audio_first=audio_first, merged=merged)
        assert [c["index"] for c in body["choices"]] == ([0] if merged else [0, 0])
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
    assert [c.modality for c in chunks if c] == ["text", "text", "audio", "audio", "usage"]
    assert chunks[0].text == "" and chunks[1].text == "Hello"  # type: ignore[union-attr]
    audio = [decode_wav_b64(c.audio_b64) for c in chunks if c and c.modality == "audio"]
    assert b"".join(a.pcm for a in audio) == b"".join(pieces)
    last_audio, usage = chunks[-2], chunks[-1]
    assert last_audio.finish_reason == "stop" and last_audio.usage["completion_tokens"] == 0  # type: ignore[union-attr,index]
    assert usage.usage["completion_tokens"] == 1  # type: ignore[union-attr,index]
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
        assert (engine_status(err.value), err.value.code, err.value.backend) == (
            503,
            "backend_loading",
            "omni",
        )
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
    responder = VllmOmniResponder(backend, 24000, speaker="chelsie")
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


async def test_a_reply_without_audio_is_spoken_by_the_voice_pipeline(server: FaultServer) -> None:
    """A deployment without audio output: the responder says so (`has_audio` False), learns it (`auto`:
    later replies ask for text only), and the voice pipeline speaks the text with the TTS Synthesizer,
    sentence by sentence, with the sentences' texts on its segments."""
    server.set_mode("no_audio")
    omni = client(server)
    tts_backend = client(server, name="tts")
    synth = VllmOmniSynthesizer(tts_backend, 24000)
    responder = VllmOmniResponder(omni, 24000)
    sent: list[bytes] = []

    async def emit(event: VoiceEvent) -> None:
        if isinstance(event, AudioOut):
            sent.append(event.pcm)

    try:
        await omni.poll_once()
        await tts_backend.poll_once()
        assert responder.produces_audio
        run = ResponseRun(
            response_id="r1",
            responder=responder,
            synthesizer=synth,
            request=ConversationRequest(history=[ChatMessage("user", "hi")], voice="vivian"),
            emit=emit,
            sample_rate=24000,
            timings=ResponseTimings(commit=0.0),
            lead_ms=5000,
        )
        await asyncio.wait_for(run.run(), 10)
        assert server.last_bodies["/v1/chat/completions"]["modalities"] == ["text", "audio"]
        assert run.text == "".join(server.reply_text)
        assert server.hits["POST /v1/audio/speech"] >= 1  # spoken by the TTS server
        segments = run.playout.segments
        assert segments and all(s.text and s.complete and s.heard_whole for s in segments)
        assert sum(len(p) for p in sent) == 2 * sum(s.total_samples for s in segments) > 0
        assert run.spoken_text() == " ".join(s.text or "" for s in segments)
        assert not responder.produces_audio  # learned: later turns ask Omni for text only
        events = [
            e async for e in responder.respond(ConversationRequest(history=[ChatMessage("user", "again")]))
        ]
        assert server.last_bodies["/v1/chat/completions"]["modalities"] == ["text"]
        assert not any(e.kind == "audio" for e in events)
        assert events[-1].kind == "usage" and not events[-1].has_audio
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
        assert (engine_status(err.value), err.value.code) == (502, "backend_bad_response")
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
        assert [(i, len(pcm)) for i, pcm in sentences(chunks)] == [(0, len(tone(0.6))), (1, len(tone(0.6)))]
        sent = server.last_bodies["/v1/audio/speech"]
        assert sent["stream"] is True and sent["response_format"] == "pcm" and "speed" not in sent
        assert sent["stream_format"] == "audio"  # raw bytes: `stream` alone gets events from 0.30.0
        assert sent["voice"] == "vivian" and sent["language"] == "English"
        ids = server.request_ids[-2:]  # X-Request-Id: vLLM's request id, unique per backend call
        assert all(i.startswith("gw-tts-") for i in ids) and len(set(ids)) == 2
        expected = {"http500": 502, "truncated_audio": 502, "stall_before": 504, "stall_mid": 504}
        for mode, status in expected.items():
            server.set_mode(mode)
            with pytest.raises(BackendError) as err:
                [c async for c in synth.stream(request)]
            assert engine_status(err.value) == status, mode
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
        body = {"input": "x", "stream": True, "stream_format": "audio", "response_format": "pcm"}
        async with backend.stream("POST", "/v1/audio/speech", json_body=body) as resp:
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
        await gen.aclose()  # type: ignore[attr-defined]
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
                    assert engine_status(err.value) == 502 and "401" in err.value.message
                assert "s3cret" not in repr(cfg)
            finally:
                await backend.aclose()
    finally:
        await engine_set.aclose()


# -- the TTS client against vLLM-Omni 0.30.0's answers -----------------------------------------


def clip(name: str = "narrator", seconds: float = 2.0) -> VoiceClip:
    audio = wav_bytes(tone(seconds, 220), 24000)
    return VoiceClip(name, audio, "audio/wav", "A short reference clip.", "en", seconds)


async def test_events_are_read_when_a_server_answers_sse_anyway(server: FaultServer) -> None:
    """A server that streams `speech.audio.delta` events although we asked for raw bytes still gives the
    same PCM; an event stream that reports an error or stops before `speech.audio.done` is a 502."""
    backend = client(server, name="tts")
    synth = VllmOmniSynthesizer(backend, 24000)
    try:
        await backend.poll_once()
        request = synth.resolve(SynthesisRequest(text="One.", voice="vivian", language="en"))
        raw = sentences([c async for c in synth.stream(request)])
        server.set_mode("sse_only")
        events = sentences([c async for c in synth.stream(request)])
        assert events == raw and len(raw[0][1]) == len(tone(0.6))
        for mode, words in (("sse_error", "engine died"), ("sse_truncated", "speech.audio.done")):
            server.set_mode(mode)
            with pytest.raises(BackendError) as err:
                [c async for c in synth.stream(request)]
            assert (engine_status(err.value), err.value.code) == (502, "backend_bad_response"), mode
            assert words in err.value.message, err.value.message
    finally:
        await backend.aclose()


async def test_a_base_model_offers_no_default_voice(server: FaultServer) -> None:
    """A Base model lists only the placeholder "default" and refuses it without a reference: the gateway
    offers it to nobody, says why, and offers its clips instead."""
    server.builtin = []
    backend = client(server, name="tts")
    bare = VllmOmniSynthesizer(backend, 24000)
    try:
        await backend.poll_once()
        assert bare.voices() == []
        with pytest.raises(EngineNotReadyError, match="TTS_VOICES_DIR"):
            bare.resolve(SynthesisRequest(text="Hi.", voice="default"))
        assert "TTS_VOICES_DIR" in (bare.models()[0].detail or "")
        # What the gateway would have met had it offered "default": the server's own 400.
        body = {
            "input": "Hi.",
            "voice": "default",
            "task_type": "Base",
            "stream": True,
            "stream_format": "audio",
        }
        with pytest.raises(BackendError) as err:
            await backend.request_json("POST", "/v1/audio/speech", json_body=body)
        assert (engine_status(err.value), err.value.code, err.value.upstream_status) == (
            502,
            "backend_rejected",
            400,
        )
        assert "requires 'ref_audio' or 'speaker_embedding'" in err.value.message
    finally:
        await backend.aclose()
    backend = client(server, name="tts")
    synth = VllmOmniSynthesizer(backend, 24000, [clip()])
    try:
        await backend.poll_once()
        assert [(v.id, v.aliases) for v in synth.voices()] == [("narrator", ("default",))]
        request = synth.resolve(SynthesisRequest(text="Hello.", voice="default"))
        assert request.voice == "narrator" and [c.index async for c in synth.stream(request) if c.final] == [
            0
        ]
        sent = server.last_bodies["/v1/audio/speech"]
        assert (sent["voice"], sent["task_type"], "ref_audio" in sent) == ("narrator", "Base", False)
    finally:
        await backend.aclose()


async def test_registration_is_idempotent_and_overwrites_a_foreign_clip(server: FaultServer) -> None:
    """Uploads happen once; a reconnect that finds our very clip listed uploads nothing; a clip listed under
    our name that is not ours is overwritten (vLLM-Omni 0.30.0 answers 200 to a second upload)."""
    ours = clip()
    backend = client(server, name="tts")
    synth = VllmOmniSynthesizer(backend, 24000, [ours])
    before = server.hits["POST /v1/audio/voices"]
    try:
        await backend.poll_once()
        assert server.hits["POST /v1/audio/voices"] == before + 1
        assert server.uploaded["narrator"]["file_size"] == len(ours.audio)
        await synth._discover_voices()  # a reconnect: the server still holds our clip
        assert server.hits["POST /v1/audio/voices"] == before + 1
        server.uploaded["narrator"]["file_size"] += 1  # someone else's clip under our name
        await synth._discover_voices()
        assert server.hits["POST /v1/audio/voices"] == before + 2
        assert server.uploaded["narrator"]["file_size"] == len(ours.audio)
        assert backend.state is ModelState.READY
    finally:
        await backend.aclose()


async def test_a_voice_the_server_lost_goes_inline_and_is_registered_again(server: FaultServer) -> None:
    backend = client(server, name="tts")
    synth = VllmOmniSynthesizer(backend, 24000, [clip()])
    try:
        await backend.poll_once()
        server.forget()  # restarted on empty storage between two polls
        request = synth.resolve(SynthesisRequest(text="Hello.", voice="narrator"))
        chunks = [c async for c in synth.stream(request)]
        assert [i for i, _ in sentences(chunks)] == [0]
        sent = server.last_bodies["/v1/audio/speech"]
        assert sent["ref_audio"].startswith("data:audio/wav;base64,") and sent["ref_text"]
        for _ in range(50):  # registered again in the background; meanwhile requests go inline
            await asyncio.sleep(0.05)
            [c async for c in synth.stream(request)]
            sent = server.last_bodies["/v1/audio/speech"]
            if "ref_audio" not in sent:
                break
        assert sent["voice"] == "narrator" and "ref_audio" not in sent  # named again, not inline
        assert server.uploaded["narrator"]["ref_text"] == "A short reference clip."
    finally:
        await synth.aclose()


async def test_refusals_are_clear_errors_naming_the_backend_and_its_message(server: FaultServer) -> None:
    """Each 4xx vLLM-Omni 0.30.0 gives becomes 502 `backend_rejected` with the server's status and message
    (never a 500, no breaker verdict); a 404 for our model name makes the client re-read /v1/models."""
    backend = client(server, name="tts")
    try:
        await backend.poll_once()
        base = {"input": "Hi.", "response_format": "pcm", "stream": True, "stream_format": "audio"}
        cases = [
            ({**base, "model": "nope"}, 404, "The model `nope` does not exist."),
            ({**base, "speed": 1.5}, 400, "Streaming is not supported with speed adjustment"),
            ({**base, "stream_format": None, "speed": 1.5}, 400, "SSE streaming is not supported with speed"),
            ({**base, "task_type": "Base"}, 400, "Base task requires 'ref_audio' or 'speaker_embedding'"),
            (
                {**base, "voice": "nobody", "task_type": "Base"},
                400,
                "Base task with built-in speaker 'nobody'",
            ),
            ({**base, "ref_audio": "UklGRg==", "ref_text": "x"}, 400, "ref_audio must be a URL"),
        ]
        for body, status, words in cases:
            models_before = server.hits["GET /v1/models"]
            with pytest.raises(BackendError) as err:
                await backend.request_json("POST", "/v1/audio/speech", json_body=body)
            e = err.value
            assert (engine_status(e), e.code, e.backend, e.upstream_status) == (
                502,
                "backend_rejected",
                "tts",
                status,
            )
            assert words in e.message and words in e.upstream_message, e.message
            assert from_engine_error(e).body()["error"]["backend_status"] == status  # type: ignore[union-attr]
            if status == 404:
                for _ in range(250):
                    if server.hits["GET /v1/models"] > models_before:
                        break
                    await asyncio.sleep(0.02)
                assert server.hits["GET /v1/models"] > models_before  # re-discovery of the served name
        assert backend.breaker.allow() and backend.stats.failures["backend_rejected"] == len(cases)
    finally:
        await backend.aclose()


async def test_server_version_is_checked_on_connect(
    server: FaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.engines.vllm_omni.backend")
    for version, matches in (("0.30.0", True), ("0.28.1", False), (None, False)):
        server.version = version
        backend = client(server, name="tts")
        caplog.clear()
        try:
            await backend.poll_once()
            assert backend.state is ModelState.READY  # never a reason to refuse a server
            assert backend.server_version == version
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            if matches:
                assert not warnings and backend.detail == "server version 0.30.0"
            else:
                assert len(warnings) == 1 and "0.30" in warnings[0], warnings
                assert (version or "no version") in warnings[0]
                if version:
                    assert "not the 0.30.x wire format" in (backend.detail or "")
        finally:
            await backend.aclose()
