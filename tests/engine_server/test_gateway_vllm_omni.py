"""The gateway with VOICE_ENGINE=vllm-omni in front of a real engine server: every HTTP endpoint answers with
the same kind of audio and text as the embedded engine (the session `gateway` fixture)."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from tests.engine_server.conftest import CLIP_TEXT
from tests.gateway.voice_client import VoiceClient, aspoken, transcribe
from tests.support import ServerProcess, decode_wav, speech_ratio, wer

TEXT = "The gateway fronts the model servers. Every sentence streams back as soon as it is ready."


def read(server: ServerProcess, path: str = "/read", **body: object) -> httpx.Response:
    return httpx.post(server.url + path, json={"text": TEXT, **body}, timeout=120)


def test_health_models_and_no_gpu(omni_gateway: ServerProcess) -> None:
    health = httpx.get(omni_gateway.url + "/health").json()
    assert health["status"] == "ok" and health["engine"] == "vllm-omni"
    assert {k: v["state"] for k, v in health["components"].items()} == {
        "tts": "ready",
        "asr": "ready",
        "omni": "ready",
    }
    assert health["gpu"]["available"] is False and health["gpu"]["reason"]  # this machine has no GPU
    models = {m["role"]: m["id"] for m in httpx.get(omni_gateway.url + "/models").json()["models"]}
    assert models == {
        "tts": "voice-gateway/tts-cpu",
        "asr": "voice-gateway/omni-cpu",
        "omni": "voice-gateway/omni-cpu",
    }
    ids = {m["id"] for m in httpx.get(omni_gateway.url + "/v1/models").json()["data"]}
    assert {"voice-gateway/tts-cpu", "voice-gateway/omni-cpu", "tts-1", "whisper-1"} <= ids
    langs = httpx.get(omni_gateway.url + "/languages").json()
    assert [v["id"] for v in langs["voices"]] == [
        "narrator",
        "joe",
    ]  # the clip first (default), then built-in
    assert [lang["code"] for lang in langs["languages"]["tts"]] == ["en"]  # what the server really speaks


def test_voice_clip_was_registered_with_the_tts_server(
    omni_gateway: ServerProcess, engine_server: ServerProcess
) -> None:
    uploaded = httpx.get(engine_server.url + "/v1/audio/voices").json()["uploaded_voices"]
    narrator = [v for v in uploaded if v["name"] == "narrator"]
    assert narrator and narrator[0]["ref_text"] == CLIP_TEXT


def test_read_matches_the_embedded_engine(omni_gateway: ServerProcess, gateway: ServerProcess) -> None:
    through = read(omni_gateway)
    embedded = read(gateway)
    assert through.status_code == 200 and through.headers["content-type"] == "audio/wav"
    a, b = decode_wav(through.content), decode_wav(embedded.content)
    assert (
        (a.sample_rate, a.channels, a.sample_width)
        == (b.sample_rate, b.channels, b.sample_width)
        == (24000, 1, 2)
    )
    assert 0.8 < a.duration / b.duration < 1.25 and speech_ratio(a.samples, 24000) > 0.3
    assert wer(TEXT, transcribe(gateway.url, (a.samples * 32768).astype("<i2").tobytes())) < 0.2


def test_read_speed_voice_and_errors(omni_gateway: ServerProcess) -> None:
    normal = decode_wav(read(omni_gateway).content)
    fast = decode_wav(read(omni_gateway, speed=2.0).content)  # the TTS server refuses speed with stream
    assert 0.4 < fast.duration / normal.duration < 0.62
    assert read(omni_gateway, voice="joe").status_code == 200  # the server's built-in voice
    bad = read(omni_gateway, voice="nobody")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_voice"
    bad = read(omni_gateway, language="de")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "unsupported_language"


def test_batch_and_openai_speech(omni_gateway: ServerProcess) -> None:
    batch = read(omni_gateway, "/voice/batch")
    assert batch.status_code == 200 and decode_wav(batch.content).sample_rate == 24000
    r = httpx.post(
        omni_gateway.url + "/v1/audio/speech",
        timeout=120,
        json={"model": "tts-1", "input": TEXT, "voice": "alloy", "response_format": "wav"},
    )
    assert r.status_code == 200 and decode_wav(r.content).duration > 2
    r = httpx.post(
        omni_gateway.url + "/v1/audio/speech",
        timeout=120,
        json={"model": "voice-gateway/tts-cpu", "input": TEXT, "voice": "narrator", "response_format": "mp3"},
    )
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg" and len(r.content) > 1000


def test_transcription_through_omni_chat(omni_gateway: ServerProcess, gateway: ServerProcess) -> None:
    wav = read(gateway).content  # speech from the embedded engine
    r = httpx.post(
        omni_gateway.url + "/voice/transcribe",
        files={"audio": ("q.wav", wav, "audio/wav")},
        data={"language": "en"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert wer(TEXT, body["text"]) < 0.2 and body["language"] == "en" and body["duration"] > 2
    assert body["segments"] and body["segments"][0]["text"] == body["text"]
    r = httpx.post(
        omni_gateway.url + "/v1/audio/transcriptions",
        files={"file": ("q.wav", wav, "audio/wav")},
        data={"model": "whisper-1", "response_format": "json"},
        timeout=120,
    )
    assert r.status_code == 200 and wer(TEXT, r.json()["text"]) < 0.2
    bad = httpx.post(omni_gateway.url + "/voice/transcribe", files={"audio": ("q.wav", b"nope", "audio/wav")})
    assert bad.status_code == 415


async def test_voice_conversation_through_omni(omni_gateway: ServerProcess) -> None:
    """/voice with the vllm-omni Responder: user audio goes to the Omni API; text and audio come back."""
    question = await aspoken(omni_gateway.url, "What is the capital of France?")
    client = await VoiceClient.connect(omni_gateway.ws_url)
    try:
        await client.stream(question)
        await client.send("audio.commit")
        done = await client.wait_for("response.done")
        transcript = client.events("transcript")
        assert transcript and wer("What is the capital of France?", transcript[0]["text"]) < 0.3
        assert client.text_of(done["response_id"]).strip()
        assert speech_ratio(np.frombuffer(bytes(client.audio), "<i2") / 32768.0, 24000) > 0.2
    finally:
        await client.close()


@pytest.mark.parametrize(
    "family", ["voice_gateway_backend_requests_total", "voice_gateway_backend_circuit_open"]
)
def test_metrics_expose_backend_families(omni_gateway: ServerProcess, family: str) -> None:
    text = httpx.get(omni_gateway.url + "/metrics").text
    assert family in text
    assert 'voice_gateway_backend_up{backend="tts"} 1.0' in text
    assert 'voice_gateway_backend_requests_total{backend="tts",outcome="ok"}' in text


async def test_read_stream_websocket_through_omni(omni_gateway: ServerProcess) -> None:
    """WS /read/stream on the vllm-omni Synthesizer: a mark per sentence, audio identical to POST /read."""
    import websockets

    async with websockets.connect(omni_gateway.ws_url + "/read/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "text": TEXT}))
        audio, marks = bytearray(), []
        while True:
            message = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(message, bytes):
                audio += message
                continue
            event = json.loads(message)
            assert event["type"] != "error", event
            if event["type"] == "mark":
                marks.append(event)
            if event["type"] == "complete":
                break
    assert [m["index"] for m in marks] == [0, 1]
    assert TEXT[marks[1]["char_start"] : marks[1]["char_end"]].startswith("Every sentence")
    whole = read(omni_gateway, response_format="pcm").content
    assert bytes(audio) == whole  # the engine server's Piper is deterministic, and so is the path through


def test_a_voice_the_server_lost_is_sent_inline(
    omni_gateway: ServerProcess, engine_server: ServerProcess
) -> None:
    """The TTS server restarted between two polls and forgot the uploaded voice: /read still works."""
    assert httpx.delete(engine_server.url + "/v1/audio/voices/narrator").status_code == 200
    r = read(omni_gateway, voice="narrator")
    assert r.status_code == 200 and decode_wav(r.content).duration > 2


# "I live in Tokyo. I drink coffee every morning."
JAPANESE = "私は東京に住んでいます。毎朝、コーヒーを飲みます。"


def test_translation_goes_through_omni_chat_with_its_instruction(
    omni_gateway: ServerProcess, gateway: ServerProcess
) -> None:
    """/v1/audio/translations on the vllm-omni engine: the translation instruction goes to the Omni chat API
    (the engine-server answers it with Whisper's translate task, as the real model answers in English)."""
    if "ja" not in [
        lang["code"] for lang in httpx.get(gateway.url + "/languages").json()["languages"]["tts"]
    ]:
        pytest.skip("the [ja] extra is not installed: no Japanese speech to translate")
    speech = httpx.post(gateway.url + "/read", json={"text": JAPANESE, "language": "ja"}, timeout=120)
    assert speech.status_code == 200, speech.text
    r = httpx.post(
        omni_gateway.url + "/v1/audio/translations",
        files={"file": ("ja.wav", speech.content, "audio/wav")},
        data={"model": "whisper-1", "response_format": "json"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    text = r.json()["text"].lower()
    assert not any("\u3040" <= ch <= "\u9fff" for ch in text), text  # English, not the Japanese transcript
    assert len({w for w in ("live", "tokyo", "coffee", "morning") if w in text}) >= 3, text
    # A chat completion has no timestamps: words are refused before the audio is read.
    words = httpx.post(
        omni_gateway.url + "/v1/audio/transcriptions",
        files={"file": ("ja.wav", speech.content, "audio/wav")},
        data={"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities[]": "word"},
        timeout=120,
    )
    assert words.status_code == 400 and words.json()["error"]["code"] == "word_timestamps_unsupported"
