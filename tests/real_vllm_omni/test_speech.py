"""Speech through the gateway (VOICE_ENGINE=vllm-omni) in front of the REAL vLLM-Omni 0.30.0 Qwen3-TTS server.

Random weights speak noise, but the protocol, bytes and status are the production ones: 24 kHz mono PCM16, one
2.4 s utterance per sentence (the CPU deploy config's `min_tokens: 30` at 12.5 Hz), deterministic under
`TTS_SEED`.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
import websockets

from gateway.audio.pcm import read_wav
from tests.gateway.test_read_stream import Client
from tests.real_vllm_omni.conftest import RealServers, gateway_in_front
from tests.support import ServerProcess, decode_wav

TEXT = "The gateway fronts the model servers. Every sentence streams back as soon as it is ready."
ONE_SENTENCE_S = 2.4  # talker min_tokens 30 at 12.5 codec frames per second, then EOS (vgw_dummy_eos)
WAIT_S = 300


def read(server: ServerProcess, path: str = "/read", **body: object) -> httpx.Response:
    return httpx.post(server.url + path, json={"text": TEXT, **body}, timeout=WAIT_S)


def decoded_seconds(data: bytes, fmt: str) -> float:
    """Decode any container the API serves with PyAV: the seconds of audio it really holds."""
    if fmt == "pcm":
        return len(data) / 2 / 24000
    with av.open(io.BytesIO(data)) as container:
        frames = sum(frame.samples for frame in container.decode(audio=0))
        return frames / container.streams.audio[0].rate


def test_read_is_a_24khz_wav_of_two_utterances(real_gateway: ServerProcess) -> None:
    r = read(real_gateway)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    wav = decode_wav(r.content)
    assert (wav.sample_rate, wav.channels, wav.sample_width) == (24000, 1, 2)
    # Two sentences, two requests to the server, each 2.4 s of audio joined.
    assert wav.duration == pytest.approx(2 * ONE_SENTENCE_S, abs=0.05)
    assert wav.rms > 0.0


def test_read_is_repeatable_under_a_seed(real_gateway: ServerProcess) -> None:
    """`TTS_SEED` reaches the server: equal requests give byte-identical audio, which makes exact checks of
    streaming (pause/resume) possible on a sampling model."""
    assert read(real_gateway).content == read(real_gateway).content


def test_voice_batch(real_gateway: ServerProcess) -> None:
    r = httpx.post(real_gateway.url + "/voice/batch", json={"text": "Hello, world!"}, timeout=WAIT_S)
    assert r.status_code == 200, r.text
    assert decode_wav(r.content).duration == pytest.approx(ONE_SENTENCE_S, abs=0.05)


@pytest.mark.parametrize("fmt", ["wav", "pcm", "mp3", "opus", "aac", "flac"])
def test_openai_sdk_streams_speech_in_every_format(real_gateway: ServerProcess, fmt: str) -> None:
    client = openai.OpenAI(base_url=real_gateway.url + "/v1", api_key="unused", timeout=WAIT_S)
    chunks = 0
    data = bytearray()
    with client.audio.speech.with_streaming_response.create(
        model="tts-1",
        voice="alloy",
        input="Hello from the real server.",
        response_format=fmt,  # type: ignore[arg-type]
    ) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            chunks += 1
            data += chunk
    assert chunks >= 1 and data
    assert decoded_seconds(bytes(data), fmt) == pytest.approx(ONE_SENTENCE_S, abs=0.12)


async def test_read_stream_marks_audio_and_exact_pause_resume(real_gateway: ServerProcess) -> None:
    whole = read_wav(read(real_gateway).content).pcm
    async with websockets.connect(real_gateway.ws_url + "/read/stream", max_size=None) as ws:
        c = Client(ws)
        await c.send("start", text=TEXT)
        started = await c.until("started")
        assert started["stream_id"]
        await c.first_audio()
        await c.send("pause")
        paused = await c.until("paused")
        assert paused["samples_sent"] * 2 == len(c.pcm)
        await asyncio.sleep(1.0)
        await c.send("resume")
        resumed = await c.until("resumed")
        assert resumed["samples_sent"] == paused["samples_sent"]
        done = await c.until("complete", "error")
    assert done["type"] == "complete", done
    assert [m["index"] for m in c.events("mark")] == [0, 1]
    # Nothing lost or repeated across the pause: byte-identical to the uninterrupted POST /read (same seed).
    assert bytes(c.pcm) == whole


async def test_read_stream_cancel_then_start_again(real_gateway: ServerProcess) -> None:
    long_text = " ".join(f"Sentence number {n} is here." for n in range(1, 9))
    async with websockets.connect(real_gateway.ws_url + "/read/stream", max_size=None) as ws:
        c = Client(ws)
        await c.send("start", text=long_text)
        first = await c.until("started")
        await c.first_audio()
        await c.send("cancel")
        cancelled = await c.until("cancelled")
        assert cancelled["stream_id"] == first["stream_id"]
        assert cancelled["samples_sent"] * 2 == len(c.pcm) < 8 * ONE_SENTENCE_S * 48000
        heard = len(c.pcm)
        await c.send("start", text="A new story begins.")
        again = await c.until("started")
        assert again["stream_id"] != first["stream_id"]
        done = await c.until("complete", "error")
    assert done["type"] == "complete", done
    assert (len(c.pcm) - heard) / 48000 == pytest.approx(ONE_SENTENCE_S, abs=0.05)


def test_registered_voice_is_on_the_server_and_speaks(
    real_gateway: ServerProcess, real_servers: RealServers
) -> None:
    listing = httpx.get(real_servers.tts.url + "/v1/audio/voices", timeout=30).json()
    assert "narrator" in [v["name"] for v in listing["uploaded_voices"]]
    langs = httpx.get(real_gateway.url + "/languages", timeout=30).json()
    voice_ids = [v["id"] for v in langs["voices"]]
    assert voice_ids[0] == "narrator"
    # The Base model's built-in "default" cannot speak without a reference clip: never offered as a voice.
    assert "default" not in voice_ids
    assert read(real_gateway, voice="narrator").status_code == 200


def test_inline_voice_is_sent_with_each_request_and_never_uploaded(
    inline_gateway: ServerProcess, real_servers: RealServers
) -> None:
    r = read(inline_gateway, voice="reader")
    assert r.status_code == 200, r.text
    assert decode_wav(r.content).duration == pytest.approx(2 * ONE_SENTENCE_S, abs=0.05)
    listing = httpx.get(real_servers.tts.url + "/v1/audio/voices", timeout=30).json()
    assert "reader" not in [v["name"] for v in listing["uploaded_voices"]]


def test_duplicate_upload_overwrites_and_the_gateway_still_speaks(
    real_gateway: ServerProcess, real_servers: RealServers
) -> None:
    """vLLM-Omni 0.30.0 answers a duplicate voice name with 200 and overwrites it (no 'already exists')."""
    from tests.real_vllm_omni.conftest import CLIP_TEXT, reference_clip

    files = {"audio_sample": ("narrator.wav", reference_clip(2.0), "audio/wav")}
    data = {"name": "narrator", "consent": "test", "ref_text": CLIP_TEXT}
    r = httpx.post(real_servers.tts.url + "/v1/audio/voices", files=files, data=data, timeout=60)
    assert r.status_code == 200 and r.json()["success"] is True
    assert read(real_gateway, voice="narrator").status_code == 200


def test_a_voice_the_server_lost_is_sent_inline_then_registered_again(
    real_gateway: ServerProcess, real_servers: RealServers
) -> None:
    """The server restarted and forgot the uploaded voice (400 "requires 'ref_audio'"): the gateway re-sends
    the clip inline for that request and uploads it again."""
    assert httpx.delete(real_servers.tts.url + "/v1/audio/voices/narrator", timeout=30).status_code == 200
    r = read(real_gateway, voice="narrator")
    assert r.status_code == 200, r.text
    assert decode_wav(r.content).duration == pytest.approx(2 * ONE_SENTENCE_S, abs=0.05)
    deadline = 30.0
    names: list[str] = []
    while deadline > 0:
        listing = httpx.get(real_servers.tts.url + "/v1/audio/voices", timeout=30).json()
        names = [v["name"] for v in listing["uploaded_voices"]]
        if "narrator" in names:
            break
        deadline -= 0.5
        import time

        time.sleep(0.5)
    assert "narrator" in names


def error_of(r: httpx.Response) -> dict[str, object]:
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return dict(body["error"])


def test_wrong_served_model_is_a_clear_error(real_servers: RealServers, voices_dir: Path) -> None:
    """A gateway configured with a model name the server does not serve: the server's 404 NotFoundError
    becomes a clear gateway error naming the backend and the server's message, never a 500."""
    with gateway_in_front(real_servers, voices_dir, ready_path="/models", TTS_MODEL="Qwen/nope") as gw:
        r = read(gw)
        assert 400 <= r.status_code < 600 and r.status_code != 500, r.text
        err = error_of(r)
        assert "nope" in json.dumps(err), err


def test_unknown_voice_is_refused_by_the_gateway_before_the_server(real_gateway: ServerProcess) -> None:
    r = read(real_gateway, voice="nobody")
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "unknown_voice" and "narrator" in str(err["message"])


def test_speed_is_applied_by_the_gateway_never_sent_with_streaming(real_gateway: ServerProcess) -> None:
    """The real server refuses `speed` with streaming (400); the gateway streams and changes tempo itself."""
    r = read(real_gateway, speed=1.5)
    assert r.status_code == 200, r.text
    assert decode_wav(r.content).duration == pytest.approx(2 * ONE_SENTENCE_S / 1.5, rel=0.08)


def test_pcm_is_noise_not_silence(real_gateway: ServerProcess) -> None:
    pcm = np.frombuffer(read(real_gateway, response_format="pcm").content, dtype="<i2")
    assert pcm.size == int(2 * ONE_SENTENCE_S * 24000) and int(np.abs(pcm).max()) > 0


def test_a_base_model_without_reference_clips_is_a_clear_error(real_servers: RealServers) -> None:
    """The real Base model cannot speak without a reference (its 400 "Base task requires 'ref_audio'"): a
    gateway with no TTS_VOICES_DIR says so, naming the setting, and never offers the server's "default"."""
    with gateway_in_front(real_servers, None, ready_path="/models") as gw:
        r = read(gw)
        assert r.status_code == 503, r.text
        err = error_of(r)
        assert err["code"] == "engine_unavailable" and "TTS_VOICES_DIR" in str(err["message"]), err
        voices = httpx.get(gw.url + "/languages", timeout=30).json()["voices"]
        assert "default" not in [v["id"] for v in voices]
