"""Audio formats: every encoder's output decodes back (PyAV) to the audio that went in, whole and streamed,
and the HTTP routes hand each format out with the right Content-Type, chunked where they stream."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import av
import httpx
import numpy as np
import pytest
import websockets

from gateway.audio.encode import CONTENT_TYPES, encode
from gateway.audio.stream_encode import StreamEncoder
from tests.support import ServerProcess, decode_wav, speech_ratio, wer

RATE = 24000
CODECS = ("wav", "mp3", "opus", "aac", "flac")
LOSSLESS = ("wav", "flac")
# Codec priming/padding: MP3 and AAC add up to a couple of frames; Opus and the lossless ones are exact.
SLACK_S = {"wav": 0.0, "flac": 0.0, "opus": 0.0, "mp3": 0.1, "aac": 0.1}
EXPECTED_CODEC = {"wav": "pcm_s16le", "mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac"}


def _tone(seconds: float = 1.5) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    sweep = 0.4 * np.sin(2 * np.pi * (300 + 200 * t) * t) * np.minimum(1, 10 * t)
    return (sweep * 32767).astype("<i2").tobytes()


def _decode(data: bytes) -> tuple[np.ndarray, int, str, str]:
    """float32 mono at the file's own rate, its rate, container and codec names."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        frames = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
        rate = stream.rate
        fmt = container.format.name
    raw = np.concatenate(frames)
    samples = raw.astype(np.float32) / 32768.0 if raw.dtype == np.int16 else raw.astype(np.float32)
    return samples, int(rate), fmt, codec


def _resampled(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return samples
    import soxr

    return soxr.resample(samples, rate, RATE)


def _similar(reference: bytes, decoded: np.ndarray, lossless: bool) -> None:
    ref = np.frombuffer(reference, dtype="<i2").astype(np.float32) / 32768.0
    if lossless:
        assert np.array_equal(
            np.round(decoded[: ref.size] * 32768).astype(np.int32), (ref * 32768).astype(np.int32)
        )
        return
    # Lossy codecs delay the signal by their priming: find the delay, then compare the waveforms.
    probe = ref[: RATE // 2]
    corr = np.correlate(decoded[:RATE], probe[: RATE // 4], mode="valid")
    delay = int(np.argmax(corr))
    n = min(ref.size, decoded.size - delay)
    a, b = ref[:n], decoded[delay : delay + n]
    snr = 10 * np.log10(np.sum(a**2) / max(np.sum((a - b) ** 2), 1e-12))
    assert snr > 10, f"decoded audio differs from the input (SNR {snr:.1f} dB)"


@pytest.mark.parametrize("fmt", CODECS)
def test_whole_file_encoding_decodes_back(fmt: str) -> None:
    pcm = _tone()
    samples, rate, container, codec = _decode(encode(pcm, RATE, fmt))
    assert codec.startswith(EXPECTED_CODEC[fmt])
    assert (
        container.split(",")[0]
        in {"wav": "wav", "mp3": "mp3", "opus": "ogg", "aac": "aac", "flac": "flac"}[fmt]
    )
    samples = _resampled(samples, rate)
    duration = len(pcm) / 2 / RATE
    assert duration <= samples.size / RATE <= duration + SLACK_S[fmt] + 0.005
    _similar(pcm, samples, fmt in LOSSLESS)


@pytest.mark.parametrize("fmt", CODECS)
def test_stream_encoder_output_decodes_back(fmt: str) -> None:
    pcm = _tone(2.0)
    encoder = StreamEncoder(fmt, RATE)
    pieces = [encoder.write(pcm[i : i + 9600]) for i in range(0, len(pcm), 9600)]  # 200 ms at a time
    pieces.append(encoder.finish())
    # Bytes leave while the input is still arriving, not only at the end.
    assert sum(len(p) for p in pieces[: len(pieces) // 2]) > 0
    samples, rate, _, codec = _decode(b"".join(pieces))
    assert codec.startswith(EXPECTED_CODEC[fmt])
    samples = _resampled(samples, rate)
    assert 2.0 <= samples.size / RATE <= 2.0 + SLACK_S[fmt] + 0.005
    _similar(pcm, samples, fmt in LOSSLESS)


def test_stream_encoder_pcm_and_wav_header() -> None:
    pcm = _tone(0.5)
    assert StreamEncoder("pcm", RATE).write(pcm) == pcm
    enc = StreamEncoder("wav", RATE)
    data = enc.write(pcm) + enc.finish()
    # A streaming WAV header: the sizes are unknown when it is written (0xFFFFFFFF), the data follows as is.
    assert data[:4] == b"RIFF" and data[4:8] == b"\xff\xff\xff\xff" and data[8:12] == b"WAVE"
    assert data.endswith(pcm)
    with pytest.raises(ValueError):
        StreamEncoder("opus", 22050)


# -- over HTTP --------------------------------------------------------------------------------------------

TEXT = "Formats are checked by ear. The second sentence follows."


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def reference_pcm(client: httpx.Client) -> bytes:
    r = client.post("/read", json={"text": TEXT, "response_format": "pcm"})
    assert r.status_code == 200 and r.headers["content-type"] == "audio/pcm"
    return r.content


@pytest.mark.parametrize("fmt", CODECS)
def test_read_returns_each_format(client: httpx.Client, reference_pcm: bytes, fmt: str) -> None:
    r = client.post("/read", json={"text": TEXT, "response_format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CONTENT_TYPES[fmt]
    samples, rate, _, codec = _decode(r.content)
    assert codec.startswith(EXPECTED_CODEC[fmt])
    samples = _resampled(samples, rate)
    assert abs(samples.size / RATE - float(r.headers["X-Audio-Duration"])) <= SLACK_S[fmt] + 0.01
    _similar(reference_pcm, samples, fmt in LOSSLESS)


@pytest.mark.parametrize("fmt", [*CODECS, "pcm"])
def test_openai_speech_streams_each_format(client: httpx.Client, reference_pcm: bytes, fmt: str) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": fmt}
    with client.stream("POST", "/v1/audio/speech", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == CONTENT_TYPES[fmt]
        assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
        data = r.read()
    if fmt == "pcm":
        assert data == reference_pcm  # Piper is deterministic: streamed and whole audio are the same samples
        return
    if fmt == "wav":
        assert data.endswith(reference_pcm)
        assert decode_wav(data).samples.size == len(reference_pcm) // 2
        return
    samples, rate, _, _ = _decode(data)
    _similar(reference_pcm, _resampled(samples, rate), fmt in LOSSLESS)


def test_openai_speech_whole_file_when_not_streamed(client: httpx.Client) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "flac", "stream": False}
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    assert _decode(r.content)[3] == "flac"


def test_openai_sdk_defaults_get_mp3_that_transcribes(gateway: ServerProcess, client: httpx.Client) -> None:
    from openai import OpenAI

    sdk = OpenAI(base_url=gateway.url + "/v1", api_key="unused")
    audio = sdk.audio.speech.create(model="tts-1", voice="alloy", input=TEXT).content
    samples, rate, container, codec = _decode(audio)
    assert container == "mp3" and codec.startswith("mp3")
    samples = _resampled(samples, rate)
    assert speech_ratio(samples, RATE) > 0.3
    heard = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("s.mp3", audio, "audio/mpeg")},
        data={"model": "whisper-1"},
    ).json()["text"]
    assert wer(TEXT, heard) <= 0.2, heard


def test_opus_stream_transcribes(client: httpx.Client) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": "opus"}
    with client.stream("POST", "/v1/audio/speech", json=body) as r:
        data = r.read()
    heard = client.post(
        "/v1/audio/transcriptions", files={"file": ("s.ogg", data, "audio/ogg")}, data={"model": "whisper-1"}
    ).json()["text"]
    assert wer(TEXT, heard) <= 0.2, heard


def test_stream_hang_up_mid_way_leaves_server_serving(gateway: ServerProcess, client: httpx.Client) -> None:
    long_text = " ".join(f"This is sentence number {i} of a long text." for i in range(30))
    body = {"model": "tts-1", "voice": "alloy", "input": long_text, "response_format": "opus"}
    with (
        httpx.Client(base_url=gateway.url, timeout=60) as other,
        other.stream("POST", "/v1/audio/speech", json=body) as r,
    ):
        first = next(r.iter_bytes())
        assert first[:4] == b"OggS"
    # Synthesis of the rest stopped with the connection; the gateway still answers, the stream gauge is back.
    r = client.post("/read", json={"text": "Still here.", "response_format": "wav"})
    assert r.status_code == 200 and decode_wav(r.content).duration > 0.3
    # The server learns of the hang-up at its next write: give it a moment (this is no speed assertion).
    deadline = time.monotonic() + 20
    while (open_streams := _speech_streams(client)) != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_streams == 0


def _speech_streams(client: httpx.Client) -> float | None:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('voice_gateway_active_streams{kind="speech_http"}'):
            return float(line.split()[-1])
    return None


def test_unstreamable_input_is_a_clean_error(client: httpx.Client) -> None:
    body = {"model": "tts-1", "voice": "alloy", "input": "...", "response_format": "mp3"}
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "nothing_to_say"
    r = client.post("/v1/audio/speech", json={**body, "input": "hi", "response_format": "ogg"})
    assert r.status_code == 422


# -- /read/stream with format "opus" ----------------------------------------------------------------------

WS_TEXT = "Slow networks get Opus. Pausing keeps every sample. The end comes last."


async def _ws_events(ws: Any, until: str) -> tuple[list[dict[str, Any]], bytearray]:
    events: list[dict[str, Any]] = []
    audio = bytearray()
    async with asyncio.timeout(120):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                audio += message
                continue
            events.append(json.loads(message))
            if events[-1]["type"] in (until, "error"):
                return events, audio


async def test_read_stream_opus_pauses_exactly_and_decodes_to_the_same_audio(
    gateway: ServerProcess, reference_ws_pcm: bytes
) -> None:
    async with websockets.connect(gateway.ws_url + "/read/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "text": WS_TEXT, "format": "opus"}))
        started = json.loads(await ws.recv())
        assert started["type"] == "started" and started["encoding"] == "ogg_opus"
        assert started["sample_rate"] == RATE
        first = await ws.recv()
        while not isinstance(first, bytes):  # the sentence mark comes before its audio
            assert json.loads(first)["type"] == "mark"
            first = await ws.recv()
        assert first[:4] == b"OggS"
        await ws.send(json.dumps({"type": "pause"}))
        events, audio = await _ws_events(ws, "paused")
        paused = events[-1]
        # Nothing leaves while paused: the next message after `resume` is `resumed`, at the same position.
        await ws.send(json.dumps({"type": "resume"}))
        resumed = json.loads(await ws.recv())
        assert resumed["type"] == "resumed" and resumed["samples_sent"] == paused["samples_sent"]
        events, rest = await _ws_events(ws, "complete")
        done = events[-1]
    data = first + audio + rest
    assert done["type"] == "complete" and done["samples_sent"] == len(reference_ws_pcm) // 2
    samples, rate, container, codec = _decode(bytes(data))
    assert (container, codec) == ("ogg", "opus")
    samples = _resampled(samples, rate)
    assert samples.size == len(reference_ws_pcm) // 2  # Ogg pre-skip and end trimming give the exact length
    _similar(reference_ws_pcm, samples, lossless=False)


async def test_read_stream_rejects_unknown_format_and_stays_usable(gateway: ServerProcess) -> None:
    async with websockets.connect(gateway.ws_url + "/read/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "text": "Hi.", "format": "mp3"}))
        error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "invalid_format" and "opus" in error["message"]
        await ws.send(json.dumps({"type": "start", "text": "Hi there.", "format": "pcm"}))
        events, audio = await _ws_events(ws, "complete")
        assert events[0]["encoding"] == "pcm_s16le" and events[-1]["samples_sent"] * 2 == len(audio)


@pytest.fixture(scope="module")
def reference_ws_pcm(client: httpx.Client) -> bytes:
    return client.post("/read", json={"text": WS_TEXT, "response_format": "pcm"}).content
