"""The OpenAI audio API as the real `openai` SDK sees it (issue 19): today's model names, streamed
transcription, verbose_json with words, translations. Every body is validated against the SDK's own types."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.audio import (
    TranscriptionSegment,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
    TranscriptionWord,
)
from pydantic import BaseModel

from tests.support import ServerProcess, wer

TEXT = (
    "Please call me back this afternoon when you have a moment. The quick brown fox jumps over the lazy dog."
)
# The SDK's models allow extra keys; these are the only ones the gateway may add (OpenAI's own `task`).
ALLOWED_EXTRA = {"task"}


@pytest.fixture(scope="module")
def sdk(gateway: ServerProcess) -> Iterator[OpenAI]:
    client = OpenAI(base_url=gateway.url + "/v1", api_key="unused", timeout=60, max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def speech_wav(sdk: OpenAI) -> bytes:
    return sdk.audio.speech.create(model="tts-1", voice="alloy", input=TEXT, response_format="wav").content


def strict(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """Strict validation, plus no key the SDK's type does not declare (its models allow extras)."""
    extra = set(data) - set(model.model_fields) - ALLOWED_EXTRA
    assert not extra, f"{model.__name__} has undeclared keys {extra}"
    return model.model_validate(data, strict=True)


def post_transcription(gateway: ServerProcess, audio: bytes, **form: str | list[str]) -> httpx.Response:
    return httpx.post(
        gateway.url + "/v1/audio/transcriptions",
        files={"file": ("s.wav", audio, "audio/wav")},
        data=form,
        timeout=60,
    )


# -- model names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["gpt-transcribe", "gpt-4o-mini-transcribe-2025-12-15", "gpt-4o-transcribe-diarize", "whisper-1"]
)
def test_todays_transcription_names_work(sdk: OpenAI, speech_wav: bytes, model: str) -> None:
    result = sdk.audio.transcriptions.create(model=model, file=("s.wav", speech_wav, "audio/wav"))
    assert wer(TEXT, result.text) <= 0.2, result.text


@pytest.mark.parametrize("model", ["gpt-4o-mini-tts-2025-12-15", "tts-1-hd", "gpt-4o-mini-tts"])
def test_todays_speech_names_work(sdk: OpenAI, model: str) -> None:
    audio = sdk.audio.speech.create(model=model, voice="alloy", input="Hello there.", response_format="wav")
    assert audio.content[:4] == b"RIFF" and len(audio.content) > 10_000


def test_served_ids_and_aliases_are_listed_and_accepted(sdk: OpenAI, speech_wav: bytes) -> None:
    models = {m.id: m for m in sdk.models.list().data}
    assert {"tts-1", "gpt-4o-mini-tts", "whisper-1", "gpt-transcribe"} <= set(models)
    served_asr = [i for i, m in models.items() if getattr(m, "role", None) == "asr" and m.owned_by != "alias"]
    assert served_asr
    result = sdk.audio.transcriptions.create(model=served_asr[0], file=("s.wav", speech_wav, "audio/wav"))
    assert wer(TEXT, result.text) <= 0.2


def test_a_speech_name_on_transcriptions_is_refused_clearly(sdk: OpenAI, speech_wav: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.transcriptions.create(model="gpt-4o-mini-tts", file=("s.wav", speech_wav, "audio/wav"))
    error = info.value.response.json()["error"]
    assert error["code"] == "model_role_mismatch"
    assert "whisper-1" in error["models"] and "whisper-1" in error["message"]


def test_a_transcription_name_on_speech_is_refused_clearly(sdk: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.speech.create(model="gpt-4o-transcribe", voice="alloy", input="Hi.")
    error = info.value.response.json()["error"]
    assert error["code"] == "model_role_mismatch" and "tts-1" in error["models"]


def test_an_unknown_name_is_404_naming_what_exists(sdk: OpenAI, speech_wav: bytes) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        sdk.audio.transcriptions.create(model="gpt-4o", file=("s.wav", speech_wav, "audio/wav"))
    error = info.value.response.json()["error"]
    assert error["code"] == "model_not_found" and "gpt-transcribe" in error["models"]


# -- streaming -----------------------------------------------------------------------------------


def test_stream_yields_deltas_then_done_equal_to_plain_text(
    sdk: OpenAI, gateway: ServerProcess, speech_wav: bytes
) -> None:
    plain = sdk.audio.transcriptions.create(model="gpt-transcribe", file=("s.wav", speech_wav, "audio/wav"))
    events = list(
        sdk.audio.transcriptions.create(
            model="gpt-transcribe", file=("s.wav", speech_wav, "audio/wav"), stream=True
        )
    )
    assert len(events) >= 2
    deltas = [e for e in events[:-1] if isinstance(e, TranscriptionTextDeltaEvent)]
    done = events[-1]
    assert len(deltas) == len(events) - 1 and isinstance(done, TranscriptionTextDoneEvent)
    assert "".join(e.delta for e in deltas) == done.text == plain.text

    # The raw wire, strictly: every `data:` line is one of the SDK's two event types, deltas before done.
    r = post_transcription(gateway, speech_wav, model="gpt-transcribe", stream="true")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    payloads = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
    kinds = [p["type"] for p in payloads]
    assert kinds[-1] == "transcript.text.done" and set(kinds[:-1]) == {"transcript.text.delta"}
    for p in payloads[:-1]:
        strict(TranscriptionTextDeltaEvent, p)
    strict(TranscriptionTextDoneEvent, payloads[-1])
    assert payloads[-1]["text"] == plain.text


def test_stream_with_a_timed_format_is_a_clear_400(gateway: ServerProcess, speech_wav: bytes) -> None:
    r = post_transcription(gateway, speech_wav, model="whisper-1", stream="true", response_format="srt")
    assert r.status_code == 400 and r.json()["error"]["code"] == "stream_unsupported"


# -- verbose_json ----------------------------------------------------------------------------------


def test_verbose_json_segments_carry_every_sdk_field(gateway: ServerProcess, speech_wav: bytes) -> None:
    r = post_transcription(gateway, speech_wav, model="whisper-1", response_format="verbose_json")
    assert r.status_code == 200, r.text
    body = r.json()
    verbose = strict(TranscriptionVerbose, body)
    assert isinstance(verbose, TranscriptionVerbose) and verbose.segments and verbose.words is None
    for i, segment in enumerate(body["segments"]):
        strict(TranscriptionSegment, segment)
        assert segment["id"] == i and segment["tokens"] and segment["end"] > segment["start"]
    assert wer(TEXT, verbose.text) <= 0.2


def test_word_granularity_gives_timed_words(sdk: OpenAI, gateway: ServerProcess, speech_wav: bytes) -> None:
    r = post_transcription(
        gateway,
        speech_wav,
        model="whisper-1",
        response_format="verbose_json",
        **{"timestamp_granularities[]": ["word", "segment"]},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    strict(TranscriptionVerbose, body)
    for word in body["words"]:
        strict(TranscriptionWord, word)
    words = body["words"]
    assert wer(TEXT, " ".join(w["word"] for w in words)) <= 0.2
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(w["end"] >= w["start"] for w in words)
    assert words[-1]["end"] <= body["duration"] + 0.5

    # The SDK sends the same list as `timestamp_granularities[]` and parses the words.
    verbose = sdk.audio.transcriptions.create(
        model="whisper-1",
        file=("s.wav", speech_wav, "audio/wav"),
        response_format="verbose_json",
        timestamp_granularities=["word"],
    )
    assert verbose.words and [w.word for w in verbose.words] == [w["word"] for w in words]


def test_word_granularity_without_verbose_json_is_a_clear_400(
    gateway: ServerProcess, speech_wav: bytes
) -> None:
    r = post_transcription(gateway, speech_wav, model="whisper-1", **{"timestamp_granularities[]": "word"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_timestamp_granularity"


# -- translations --------------------------------------------------------------------------------


def test_translation_answers_in_english(sdk: OpenAI, gateway: ServerProcess, speech_wav: bytes) -> None:
    # The embedded engine's Whisper base is multilingual, so it translates (issue 21; tiny.en could not).
    # English in, English out; Japanese in is tests/engines/test_multilingual_asr.py.
    result = sdk.audio.translations.create(model="whisper-1", file=("s.wav", speech_wav, "audio/wav"))
    assert wer(TEXT, result.text) <= 0.2, result.text
    r = httpx.post(
        gateway.url + "/v1/audio/translations",
        files={"file": ("s.wav", speech_wav, "audio/wav")},
        data={"model": "whisper-1", "response_format": "verbose_json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["task"] == "translate" and body["language"] == "en" and body["segments"]
    assert wer(TEXT, body["text"]) <= 0.2


def test_translation_refuses_a_speech_model_name(sdk: OpenAI, speech_wav: bytes) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.audio.translations.create(model="tts-1", file=("s.wav", speech_wav, "audio/wav"))
    assert info.value.response.json()["error"]["code"] == "model_role_mismatch"
