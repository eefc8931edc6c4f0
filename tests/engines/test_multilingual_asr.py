"""Issue 21: the embedded engine transcribes every language Whisper base knows. Real speech in Japanese (made
by the gateway's own Kokoro voice, the [ja] extra) goes through every route that takes a language: detection,
the hint honoured, translation into English; German, Spanish and Italian in espeak-ng's voice are detected
without a hint; plus the join of the model's two parts and the English-only tiny.en that ASR_MODEL can still
choose."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import AsyncOpenAI

from gateway.audio.pcm import read_wav
from gateway.engines.embedded import kokoro_tts
from gateway.engines.embedded.model_files import ModelFilesError, _in_cache, _joined
from gateway.engines.embedded.whisper_asr import WhisperTranscriber
from gateway.engines.errors import UnsupportedLanguageError
from tests.support import ServerProcess, wer

WAIT_S = 120  # a bound for a loaded 2-core machine; never reached when things work
JAPANESE = "今日はいい天気ですね。東京の公園を散歩しましょう。"
JAPANESE_WORDS = ("天気", "東京", "公園", "散歩")
ENGLISH = "The weather is lovely today, so let us take a walk in the park."
KANA_KANJI = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")

needs_ja = pytest.mark.skipif(not kokoro_tts.available(), reason="the [ja] extra is not installed")


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=WAIT_S) as c:
        yield c


@pytest.fixture(scope="module")
def japanese_wav(client: httpx.Client) -> bytes:
    if not kokoro_tts.available():
        pytest.skip("the [ja] extra is not installed")
    r = client.post("/read", json={"text": JAPANESE, "language": "ja"})
    assert r.status_code == 200, r.text
    return r.content


def heard(text: str) -> int:
    return sum(word in text for word in JAPANESE_WORDS)


def test_languages_lists_every_whisper_language(client: httpx.Client) -> None:
    asr = {entry["code"]: entry["name"] for entry in client.get("/languages").json()["languages"]["asr"]}
    assert len(asr) >= 95, sorted(asr)
    assert {"en": "English", "ja": "Japanese", "de": "German", "zh": "Chinese", "sw": "Swahili"}.items() <= (
        asr.items()
    )


@needs_ja
def test_japanese_is_detected_and_transcribed(client: httpx.Client, japanese_wav: bytes) -> None:
    r = client.post("/voice/transcribe", files={"audio": ("ja.wav", japanese_wav, "audio/wav")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["language"] == "ja", body
    assert heard(body["text"]) >= 3, body["text"]


@needs_ja
def test_the_language_hint_is_honoured(client: httpx.Client, japanese_wav: bytes) -> None:
    def verbose(language: str) -> dict[str, Any]:
        r = client.post(
            "/v1/audio/transcriptions",
            files={"file": ("ja.wav", japanese_wav, "audio/wav")},
            data={"model": "whisper-1", "response_format": "verbose_json", "language": language},
        )
        assert r.status_code == 200, r.text
        return dict(r.json())

    as_japanese = verbose("Japanese")  # a name works like its code
    assert as_japanese["language"] == "ja" and heard(as_japanese["text"]) >= 3, as_japanese["text"]
    # Told the speech is English, Whisper writes it in Latin letters: the hint is really used.
    as_english = verbose("en")
    assert as_english["language"] == "en"
    assert not KANA_KANJI.search(as_english["text"]), as_english["text"]
    unknown = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("ja.wav", japanese_wav, "audio/wav")},
        data={"model": "whisper-1", "language": "xx"},
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unsupported_language"


@needs_ja
def test_japanese_speech_translates_into_english(client: httpx.Client) -> None:
    # "I live in Tokyo. I drink coffee every morning."
    speech = client.post(
        "/read", json={"text": "私は東京に住んでいます。毎朝、コーヒーを飲みます。", "language": "ja"}
    )
    assert speech.status_code == 200, speech.text
    r = client.post(
        "/v1/audio/translations",
        files={"file": ("ja.wav", speech.content, "audio/wav")},
        data={"model": "whisper-1", "response_format": "json"},
    )
    assert r.status_code == 200, r.text
    text = r.json()["text"]
    assert not KANA_KANJI.search(text), text
    found = {w for w in ("live", "tokyo", "coffee", "morning") if w in text.lower()}
    assert len(found) >= 3, text


@needs_ja
async def test_realtime_transcription_honours_its_language(
    gateway: ServerProcess, japanese_wav: bytes
) -> None:
    wav = read_wav(japanese_wav)
    assert wav.sample_rate == 24000
    client = AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-test", max_retries=0)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await asyncio.wait_for(conn.recv(), WAIT_S)  # session.created
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "transcription": {"model": "gpt-4o-transcribe", "language": "ja"},
                        "turn_detection": None,
                    }
                },
            }
        )
        pcm = wav.pcm + bytes(24000)
        for i in range(0, len(pcm), 4800):
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
        await conn.input_audio_buffer.commit()
        async with asyncio.timeout(WAIT_S):
            while True:
                event = await conn.recv()
                assert event.type != "error", event
                if event.type == "conversation.item.input_audio_transcription.completed":
                    break
    assert heard(event.transcript) >= 3, event.transcript


def test_english_still_transcribes_with_the_hint_or_without(client: httpx.Client) -> None:
    wav = client.post("/read", json={"text": ENGLISH}).content
    for data in ({}, {"language": "en"}):
        r = client.post("/voice/transcribe", files={"audio": ("en.wav", wav, "audio/wav")}, data=data)
        assert r.status_code == 200, r.text
        assert r.json()["language"] == "en" and wer(ENGLISH, r.json()["text"]) <= 0.15, r.json()


# A second, unrelated voice: espeak-ng's robotic formant speech (Debian's espeak-ng, installed by
# scripts/setup.d/05-system.sh), in languages the gateway itself cannot speak.
# Sentences base hears well in this voice (greedy, measured WER 0.0-0.25); with robotic speech some short
# sentences are taken for Thai, and French was unreliable, so neither is used to test detection.
EUROPEAN = {
    "de": "Heute Abend gehen wir zusammen ins Kino.",
    "es": "El tren sale de la estación a las ocho.",
    "it": "Domani andiamo al mare con i nostri amici.",
}


@pytest.mark.parametrize("language", sorted(EUROPEAN))
def test_european_speech_in_another_voice_is_detected_and_transcribed(
    client: httpx.Client, language: str, tmp_path: Path
) -> None:
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is missing: scripts/setup.d/05-system.sh installs it"
    wav = tmp_path / f"{language}.wav"
    subprocess.run([espeak, "-v", language, "-w", str(wav), EUROPEAN[language]], check=True, timeout=60)
    r = client.post(
        "/v1/audio/transcriptions",
        files={"file": (wav.name, wav.read_bytes(), "audio/wav")},
        data={"model": "whisper-1", "response_format": "verbose_json"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["language"] == language, body  # detected: no hint was given
    assert wer(EUROPEAN[language], body["text"]) <= 0.4, body["text"]


async def test_tiny_en_stays_english_only() -> None:
    executor = ThreadPoolExecutor(2)
    asr = WhisperTranscriber(executor, model="tiny.en")
    try:
        assert tuple(asr.languages()) == ("en",)
        assert asr.check_language(None) == "en"  # nothing to detect
        with pytest.raises(UnsupportedLanguageError):
            asr.check_language("ja")
        async with asyncio.timeout(WAIT_S):
            await asr.start()
        assert asr.models()[0].id == "Systran/faster-whisper-tiny.en"
        assert not asr.can_translate
    finally:
        await asr.aclose()
        executor.shutdown()


def _parts(tmp_path: Path) -> tuple[list[Path], str, int]:
    blobs = [os.urandom(3000), os.urandom(2500)]
    paths = []
    for i, blob in enumerate(blobs):
        path = tmp_path / f"part{i}"
        path.write_bytes(blob)
        paths.append(path)
    joined = b"".join(blobs)
    return paths, hashlib.sha256(joined).hexdigest(), len(joined)


def test_parts_join_once_into_a_verified_file(tmp_path: Path) -> None:
    parts, digest, size = _parts(tmp_path)
    side = tmp_path / "config.json"
    side.write_text("{}")
    target = tmp_path / "cache" / "model"
    _joined(target, "model.bin", parts, digest, size, {"config.json": side})
    data = (target / "model.bin").read_bytes()
    assert hashlib.sha256(data).hexdigest() == digest and (target / "config.json").read_text() == "{}"
    first = (target / "model.bin").stat().st_mtime_ns
    _joined(target, "model.bin", parts, digest, size, {"config.json": side})  # already there: untouched
    assert (target / "model.bin").stat().st_mtime_ns == first
    assert sorted(p.name for p in target.parent.iterdir()) == ["model"]  # no staging directory left


def test_parts_that_do_not_match_the_checksum_publish_nothing(tmp_path: Path) -> None:
    parts, _, size = _parts(tmp_path)
    target = tmp_path / "cache" / "model"
    with pytest.raises(ModelFilesError, match="sha256"):
        _joined(target, "model.bin", parts, "0" * 64, size, {})
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_a_cache_that_cannot_be_written_falls_back_to_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A pod's read-only root filesystem: here a cache path under a regular file, which even root cannot make.
    parts, digest, size = _parts(tmp_path)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    where = _in_cache(
        str(blocker / "cache"), "model", lambda t: _joined(t, "model.bin", parts, digest, size, {})
    )
    assert where == tmp_path / "tmp" / "voice-gateway-models" / "model"
    assert hashlib.sha256((where / "model.bin").read_bytes()).hexdigest() == digest
