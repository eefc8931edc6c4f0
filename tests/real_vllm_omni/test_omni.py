"""Transcription and conversation through the gateway in front of the REAL vLLM-Omni 0.30.0 Qwen3-Omni server
(thinker -> talker -> code2wav, shrunken, random weights, CPU).

The thinker says 16 tokens of filler and the talker speaks noise: the tests check what the protocols promise
(events in order, audio as 24 kHz PCM16, status, cancel and barge-in), never words.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.gateway.voice_client import VoiceClient
from tests.real_vllm_omni.conftest import RealServers, gateway_in_front, reference_clip
from tests.support import ServerProcess

WAIT_S = 300
RATE = 24000


def question_pcm(seconds: float = 2.0) -> bytes:
    """A voiced-like question at 24 kHz s16le: the audio encoder runs on it for real."""
    from gateway.audio.pcm import read_wav

    return read_wav(reference_clip(seconds)).pcm


@pytest.fixture(scope="module")
def tts_voice_gateway(real_servers: RealServers, voices_dir: Path) -> Iterator[ServerProcess]:
    """Omni for the words, the TTS server for the voice (`OMNI_AUDIO_OUTPUT=off`)."""
    with gateway_in_front(
        real_servers, voices_dir, OMNI_AUDIO_OUTPUT="off", TTS_VOICE_MODE="register"
    ) as server:
        yield server


def test_health_and_models_name_the_real_servers(real_gateway: ServerProcess) -> None:
    health = httpx.get(real_gateway.url + "/health", timeout=30).json()
    assert health["status"] == "ok" and health["engine"] == "vllm-omni"
    assert {k: v["state"] for k, v in health["components"].items()} == {
        "tts": "ready",
        "asr": "ready",
        "omni": "ready",
    }
    listed = httpx.get(real_gateway.url + "/models", timeout=30).json()["models"]
    assert {m["role"]: m["id"] for m in listed} == {
        "tts": "Qwen/Qwen3-TTS-12Hz-0.6B-Base",
        "asr": "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit",
        "omni": "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit",
    }
    # The version each real server reported at GET /version: the wire format the gateway was built for.
    assert all(m["detail"] == "server version 0.30.0" for m in listed), listed


def test_transcription_routes_go_through_omni_chat(real_gateway: ServerProcess) -> None:
    wav = reference_clip(2.0)
    r = httpx.post(
        real_gateway.url + "/voice/transcribe",
        files={"audio": ("q.wav", wav, "audio/wav")},
        data={"language": "en"},
        timeout=WAIT_S,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["text"], str) and body["language"] == "en"
    assert body["duration"] == pytest.approx(2.0, abs=0.05)
    r = httpx.post(
        real_gateway.url + "/v1/audio/transcriptions",
        files={"file": ("q.wav", wav, "audio/wav")},
        data={"model": "whisper-1", "response_format": "json"},
        timeout=WAIT_S,
    )
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["text"], str)


def pcm_rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    return float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0


async def one_voice_turn(server: ServerProcess) -> tuple[VoiceClient, dict[str, Any]]:
    client = await VoiceClient.connect(server.ws_url, turn_detection=None)
    await client.stream(question_pcm())
    await client.send("audio.commit")
    done = await asyncio.wait_for(client.wait_for("response.done"), WAIT_S)
    return client, done


async def test_voice_turn_with_omni_audio_out(real_gateway: ServerProcess) -> None:
    client, done = await one_voice_turn(real_gateway)
    try:
        assert done["status"] == "completed", (done, client.events("error"))
        assert client.events("response.started")
        # Qwen3-Omni's own audio (SSE chunks of whole 24 kHz WAVs), at the gateway's rate, not silence.
        assert len(client.audio) >= RATE * 2 // 2 and len(client.audio) % 2 == 0
        assert pcm_rms(bytes(client.audio)) > 0
    finally:
        await client.close()


async def test_voice_turn_with_text_to_tts(tts_voice_gateway: ServerProcess) -> None:
    client, done = await one_voice_turn(tts_voice_gateway)
    try:
        assert done["status"] == "completed", (done, client.events("error"))
        text = client.text_of(done["response_id"])
        if text.strip():  # the thinker's filler may be whitespace only; then there is nothing to speak
            # Spoken by the TTS server sentence by sentence: whole 2.4 s utterances.
            assert len(client.audio) >= int(2.4 * RATE * 2 * 0.95)
    finally:
        await client.close()


async def test_barge_in_during_a_real_streamed_reply(real_gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(real_gateway.ws_url, turn_detection=None)
    try:
        await client.stream(question_pcm())
        await client.send("audio.commit")
        started = await client.wait_for("response.started")
        await asyncio.wait_for(client.wait_audio(2), WAIT_S)  # the first reply audio arrived
        await client.send("interrupt")
        interrupted = await client.wait_for("interrupted")
        received = len(client.audio)
        done = await client.wait_for("response.done")
        assert interrupted["response_id"] == started["response_id"] == done["response_id"]
        assert done["status"] == "interrupted"
        # What the client heard is exactly what the gateway says it sent.
        assert interrupted["audio_sent_ms"] == received * 1000 // (2 * RATE)
        # The conversation goes on after the barge-in.
        await client.stream(question_pcm(1.5))
        await client.send("audio.commit")
        second = await asyncio.wait_for(client.wait_for("response.done"), WAIT_S)
        assert second["status"] == "completed"
    finally:
        await client.close()


async def _until(conn: Any, kind: str, log: list[Any]) -> Any:
    while True:
        ev = await asyncio.wait_for(conn.recv(), WAIT_S)
        log.append(ev)
        assert ev.type != "error", ev
        if ev.type == kind:
            return ev


async def test_realtime_turn_and_cancel(real_gateway: ServerProcess) -> None:
    client = AsyncOpenAI(base_url=real_gateway.url + "/v1", api_key="sk-test", max_retries=0)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        log: list[Any] = []
        await _until(conn, "session.created", log)
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await _until(conn, "session.updated", log)
        pcm = question_pcm()
        for i in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
        await conn.input_audio_buffer.commit()
        await _until(conn, "input_audio_buffer.committed", log)
        await conn.response.create()
        done = await _until(conn, "response.done", log)
        # Random weights never say <|im_end|>: the reply ends at the session's token limit, which the
        # Realtime API reports as incomplete for max_output_tokens (a complete reply is fine too).
        status = done.response.status
        assert status == "completed" or (
            status == "incomplete" and done.response.status_details.reason == "max_output_tokens"
        ), (status, done.response.status_details)
        audio = b"".join(base64.b64decode(e.delta) for e in log if e.type == "response.output_audio.delta")
        assert audio and pcm_rms(audio) > 0

        # A second reply, cancelled as soon as it starts: status cancelled, and no more deltas after done.
        await conn.response.create()
        second: list[Any] = []
        await _until(conn, "response.created", second)
        await conn.response.cancel()
        cancelled = await _until(conn, "response.done", second)
        assert cancelled.response.status == "cancelled"
        assert cancelled.response.status_details.reason == "client_cancelled"
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                ev = await conn.recv()
                raise AssertionError(f"an event after the cancelled response.done: {ev.type}")


def test_translation_is_accepted_by_the_real_omni_server(real_gateway: ServerProcess) -> None:
    # Random weights answer random text: what is checked is that the real server takes the translation
    # request (the same chat completion with another instruction) and the route answers OpenAI's shape.
    r = httpx.post(
        real_gateway.url + "/v1/audio/translations",
        files={"file": ("q.wav", reference_clip(2.0), "audio/wav")},
        data={"model": "whisper-1", "response_format": "verbose_json"},
        timeout=WAIT_S,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["text"], str) and body["duration"] == pytest.approx(2.0, abs=0.05)
