"""The seed's HTTP API against a real server process (embedded engine): real audio, decoded and checked."""

from __future__ import annotations

import io

import av
import httpx
import numpy as np
import pytest
import soxr

from tests.support import ServerProcess, decode_wav, speech_ratio, wer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me back this afternoon when you have a moment.",
    "Our meeting is scheduled for tomorrow morning in the main office.",
]


@pytest.fixture(scope="module")
def client(gateway: ServerProcess):
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        yield c


def read(client: httpx.Client, text: str, **extra: object) -> httpx.Response:
    return client.post("/read", json={"text": text, "voice": "default", "language": "en", **extra})


def encode_with_pyav(samples: np.ndarray, rate: int, container: str, codec: str, sample_fmt: str) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(
            (samples * 32767).astype("<i2").reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = rate
        for f in av.AudioResampler(format=sample_fmt, layout="mono", rate=rate).resample(frame):
            for p in stream.encode(f):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    return buf.getvalue()


# -- operations --------------------------------------------------------------------------------


def test_health_reports_ready_engines_uptime_version_and_no_gpu(client: httpx.Client) -> None:
    r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["engine"] == "embedded"
    assert body["components"]["tts"]["ready"] and body["components"]["asr"]["ready"]
    assert body["uptime_s"] > 0 and body["version"]
    # CI has no NVIDIA driver: the answer must say so instead of failing or inventing figures.
    assert body["gpu"]["available"] is False and "NVML" in body["gpu"]["reason"]
    assert "utilization_percent" not in body["gpu"]


def test_models_lists_each_role(client: httpx.Client) -> None:
    models = {m["role"]: m for m in client.get("/models").json()["models"]}
    assert models["tts"]["id"].endswith("en_US-joe-medium") and models["tts"]["state"] == "ready"
    assert models["asr"]["id"] == "Systran/faster-whisper-base" and models["asr"]["engine"] == "embedded"


def test_config_shows_effective_settings(client: httpx.Client) -> None:
    cfg = client.get("/config").json()["config"]
    assert cfg["AUDIO_SAMPLE_RATE"] == 24000 and cfg["VOICE_ENGINE"] == "embedded"
    assert cfg["OMNI_SERVICE_URL"] == "http://omni-service:8000" and cfg["GPU_DEVICE"] == 1


def test_languages_are_what_the_engines_support(client: httpx.Client) -> None:
    body = client.get("/languages").json()
    # English from Piper; Japanese from Kokoro where the [ja] extra is installed (test_kokoro_ja.py)
    assert body["languages"]["tts"][0] == {"code": "en", "name": "English"}
    assert {t["code"] for t in body["languages"]["tts"]} <= {"en", "ja"}
    asr = body["languages"]["asr"]  # Whisper base: every language it knows (test_multilingual_asr.py)
    assert {"code": "en", "name": "English"} in asr and len(asr) >= 95
    assert body["voices"][0]["id"] == "joe" and "default" in body["voices"][0]["aliases"]


# -- read-aloud --------------------------------------------------------------------------------


def test_read_returns_24khz_mono_16bit_speech(client: httpx.Client) -> None:
    r = read(client, SENTENCES[0])
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    wav = decode_wav(r.content)
    assert (wav.sample_rate, wav.channels, wav.sample_width) == (24000, 1, 2)
    assert 1.5 < wav.duration < 5.0
    assert speech_ratio(wav.samples, wav.sample_rate) > 0.4
    assert float(r.headers["X-Audio-Duration"]) == pytest.approx(wav.duration, abs=0.002)


def test_speed_two_is_clearly_shorter(client: httpx.Client) -> None:
    normal = decode_wav(read(client, SENTENCES[1], speed=1.0).content).duration
    fast = decode_wav(read(client, SENTENCES[1], speed=2.0).content).duration
    slow = decode_wav(read(client, SENTENCES[1], speed=0.5).content).duration
    assert fast < 0.65 * normal
    assert slow > 1.6 * normal


def test_voice_batch_returns_wav(client: httpx.Client) -> None:
    r = client.post("/voice/batch", json={"text": "Hello, world!"})
    assert r.status_code == 200
    wav = decode_wav(r.content)
    assert wav.sample_rate == 24000 and wav.duration > 0.5 and wav.rms > 0.01


def test_round_trip_read_then_transcribe_word_error_rate(client: httpx.Client) -> None:
    errors = []
    for sentence in SENTENCES:
        audio = read(client, sentence).content
        r = client.post(
            "/voice/transcribe", files={"audio": ("s.wav", audio, "audio/wav")}, data={"language": "en"}
        )
        assert r.status_code == 200
        body = r.json()
        assert body["language"] == "en"
        assert body["duration"] == pytest.approx(decode_wav(audio).duration, abs=0.05)
        assert body["segments"] and body["segments"][0]["start"] >= 0
        assert body["segments"][-1]["end"] <= body["duration"] + 0.5
        errors.append(wer(sentence, body["text"]))
    assert sum(errors) / len(errors) <= 0.10, errors


@pytest.mark.parametrize(
    ("rate", "container", "codec", "fmt"),
    [
        (16000, "wav", "pcm_s16le", "s16"),
        (44100, "wav", "pcm_s16le", "s16"),
        (22050, "mp3", "libmp3lame", "s16p"),
        (48000, "ogg", "libopus", "s16"),
        (32000, "flac", "flac", "s16"),
    ],
)
def test_transcribe_accepts_other_rates_and_compressed_formats(
    client: httpx.Client, rate: int, container: str, codec: str, fmt: str
) -> None:
    wav = decode_wav(read(client, SENTENCES[0]).content)
    resampled = soxr.resample(wav.samples, 24000, rate)
    data = encode_with_pyav(resampled, rate, container, codec, fmt)
    r = client.post(
        "/voice/transcribe", files={"audio": (f"a.{container}", data, "application/octet-stream")}
    )
    assert r.status_code == 200, r.text
    assert wer(SENTENCES[0], r.json()["text"]) <= 0.2


# -- OpenAI compatibility: the real SDK with only a base URL -----------------------------------


def test_openai_sdk_speech_and_transcription(gateway: ServerProcess) -> None:
    from openai import OpenAI

    sdk = OpenAI(base_url=gateway.url + "/v1", api_key="unused")
    models = {m.id for m in sdk.models.list().data}
    assert {"tts-1", "whisper-1"} <= models
    speech = sdk.audio.speech.create(model="tts-1", voice="alloy", input=SENTENCES[2])
    mp3 = speech.content
    with av.open(io.BytesIO(mp3)) as f:
        assert f.format.name == "mp3"
        assert f.streams.audio[0].rate == 24000
    text = sdk.audio.transcriptions.create(model="whisper-1", file=("q.mp3", mp3, "audio/mpeg"))
    assert wer(SENTENCES[2], text.text) <= 0.2
    verbose = sdk.audio.transcriptions.create(
        model="whisper-1", file=("q.mp3", mp3, "audio/mpeg"), response_format="verbose_json"
    )
    assert verbose.duration > 1 and verbose.segments


def test_openai_unknown_model_is_404(client: httpx.Client) -> None:
    r = client.post("/v1/audio/speech", json={"model": "nope", "input": "hi", "voice": "alloy"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


# -- metrics -----------------------------------------------------------------------------------


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_change_after_traffic_with_route_labels(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    assert read(client, "Counting requests.").status_code == 200
    assert read(client, "").status_code == 400
    after = client.get("/metrics").text
    for status in ("200", "400"):
        labels = {"method": "POST", "endpoint": "/read", "status": status}
        assert (
            _sample(after, "voice_gateway_requests_total", **labels)
            == _sample(before, "voice_gateway_requests_total", **labels) + 1
        )
    assert _sample(after, "voice_gateway_request_latency_seconds_count", endpoint="/read") > _sample(
        before, "voice_gateway_request_latency_seconds_count", endpoint="/read"
    )
    assert _sample(after, "voice_gateway_audio_generation_latency_seconds_count", kind="sentence") > _sample(
        before, "voice_gateway_audio_generation_latency_seconds_count", kind="sentence"
    )
    for family in (
        "voice_gateway_active_streams",
        "voice_gateway_tokens_per_second",
        "voice_gateway_gpu_utilization_percent",
        "voice_gateway_gpu_memory_used_mb",
    ):
        assert f"# TYPE {family} gauge" in after
    assert _sample(after, "voice_gateway_backend_up", backend="tts") == 1.0
    # Unknown paths share one label instead of minting a series per URL.
    client.get("/no/such/path/123")
    assert 'endpoint="unmatched"' in client.get("/metrics").text
