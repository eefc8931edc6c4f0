"""Issue 21: Japanese speech through Kokoro (the optional [ja] extra) in the embedded engine: real audio
decoded and measured, sentence by sentence with per-morpheme marks, listed in /languages only where installed,
and heard back as the words it was asked to say by the gateway's own Whisper."""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from gateway.engines.base import SynthesisRequest
from gateway.engines.embedded import build_embedded, kokoro_tts
from gateway.settings import load_settings
from tests.support import ServerProcess, decode_wav, speech_ratio

pytestmark = pytest.mark.skipif(not kokoro_tts.available(), reason="the [ja] extra is not installed")

WAIT_S = 120  # a bound for a loaded 2-core machine; never reached when things work
TEXT = "今日はいい天気ですね。東京の公園を散歩しましょう！3人で行きます。"
SENTENCES = ("今日はいい天気ですね。", "東京の公園を散歩しましょう！", "3人で行きます。")
VOICES = {"jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"}


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=WAIT_S) as c:
        yield c


def test_languages_and_voices_list_japanese(client: httpx.Client) -> None:
    body = client.get("/languages").json()
    assert {"code": "ja", "name": "Japanese"} in body["languages"]["tts"]
    assert {"code": "en", "name": "English"} in body["languages"]["tts"]
    japanese = {v["id"] for v in body["voices"] if v["language"] == "ja"}
    assert japanese == VOICES
    default = next(v for v in body["voices"] if "default" in v["aliases"])
    assert default["language"] == "en"  # English stays the default voice
    tts = [m for m in client.get("/models").json()["models"] if m["role"] == "tts"]
    assert len(tts) == 1 and tts[0]["state"] == "ready" and "detail" not in tts[0]  # Kokoro loaded too


def test_japanese_is_offered_only_when_the_extra_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    with_ja = build_embedded(settings)  # built, not started: the wiring alone decides what is listed
    assert set(with_ja.synthesizer.languages()) == {"en", "ja"}
    switched_off = build_embedded(load_settings(TTS_JAPANESE=False))  # installed, but not wanted
    monkeypatch.setattr(kokoro_tts, "available", lambda: False)
    without = build_embedded(settings)
    for engines in (switched_off, without):
        assert tuple(engines.synthesizer.languages()) == ("en",)
        assert not {v.id for v in engines.synthesizer.voices()} & VOICES
    for engines in (with_ja, switched_off, without):
        assert engines._executor is not None
        engines._executor.shutdown()


def test_read_in_japanese_is_real_speech_at_the_gateway_rate(client: httpx.Client) -> None:
    r = client.post("/read", json={"text": TEXT, "language": "ja"})
    assert r.status_code == 200, r.text
    audio = decode_wav(r.content)
    assert audio.sample_rate == 24000  # AUDIO_SAMPLE_RATE, resampled from Kokoro's own 24 kHz like Piper's
    # Three short sentences at a natural pace (about 8 morae a second): neither clipped nor padded out.
    assert 3.0 < audio.duration < 12.0, audio.duration
    assert audio.rms > 0.02 and speech_ratio(audio.samples, audio.sample_rate) > 0.5
    assert np.abs(audio.samples).max() <= 1.0
    # Heard back by the gateway's own multilingual Whisper: the words asked for, numbers read in Japanese
    # (the English normalizer must not make "3人" into "three人").
    heard = client.post(
        "/voice/transcribe", files={"audio": ("ja.wav", r.content, "audio/wav")}, data={"language": "ja"}
    ).json()["text"]
    assert sum(w in heard for w in ("天気", "東京", "公園", "散歩")) >= 3, heard
    assert "three" not in heard.lower() and ("3人" in heard or "三人" in heard), heard


def test_a_japanese_voice_named_alone_speaks_japanese(client: httpx.Client) -> None:
    alpha = client.post("/read", json={"text": SENTENCES[0], "voice": "jf_alpha"})
    kumo = client.post("/read", json={"text": SENTENCES[0], "voice": "jm_kumo"})
    assert alpha.status_code == kumo.status_code == 200
    assert alpha.content != kumo.content and decode_wav(kumo.content).duration > 0.8
    unknown = client.post("/read", json={"text": SENTENCES[0], "language": "xx"})
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unsupported_language"
    english = client.post("/read", json={"text": "Hello there."})  # still Piper's English voice
    assert english.status_code == 200 and decode_wav(english.content).duration > 0.4


def test_marks_are_per_morpheme_inside_the_text_and_the_audio(client: httpx.Client) -> None:
    r = client.post("/read", json={"text": TEXT, "language": "ja", "output": "json"})
    assert r.status_code == 200, r.text
    body = r.json()
    words = body["words"]
    for w in words:
        assert TEXT[w["char_start"] : w["char_end"]] == w["word"]
    said = [w["word"] for w in words]
    assert {"天気", "東京", "公園", "散歩"} <= set(said), said
    assert "今日はいい天気ですね" not in said  # morphemes, not whole clauses
    assert all(w["end"] > w["start"] for w in words)
    assert all(a["end"] <= b["start"] + 1e-3 for a, b in itertools.pairwise(words))
    assert words[-1]["end"] <= body["duration"] + 1e-3
    pcm = base64.b64decode(body["audio"])
    assert len(pcm) > 0


async def test_stream_yields_each_sentence_as_it_is_rendered() -> None:
    executor = ThreadPoolExecutor(2)
    synth = kokoro_tts.KokoroSynthesizer(16000, executor)  # a gateway rate other than Kokoro's own
    try:
        async with asyncio.timeout(WAIT_S):
            await synth.start()
            request = synth.resolve(
                SynthesisRequest(text=TEXT, voice="jm_kumo", language="auto", timings=True)
            )
            assert (request.voice, request.language) == ("jm_kumo", "ja")
            chunks = [c async for c in synth.stream(request)]
        assert [TEXT[c.text_start : c.text_end] for c in chunks] == list(SENTENCES)
        assert [c.index for c in chunks] == [0, 1, 2] and all(c.final for c in chunks)
        for chunk in chunks:
            assert chunk.sample_rate == 16000 and len(chunk.pcm) % 2 == 0
            seconds = len(chunk.pcm) / 2 / 16000
            assert 0.5 < seconds < 6.0, seconds
            assert chunk.words and chunk.words[-1].end <= seconds + 0.05
            assert all(chunk.text_start <= w.text_start < w.text_end <= chunk.text_end for w in chunk.words)
    finally:
        await synth.aclose()
        executor.shutdown()
