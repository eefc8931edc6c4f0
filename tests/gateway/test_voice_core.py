"""The conversation core's parts without a server: VAD on real speech, turn decisions, chunking, memory,
config validation, and the embedded LLM's streaming and stop."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.text import split_sentences
from gateway.audio.vad import StreamingVAD
from gateway.engines.base import ChatMessage, ConversationRequest, ModelState, SynthesisRequest
from gateway.engines.embedded.llm import LlamaResponder
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.sessions.voice.chunker import SentenceChunker, speakable
from gateway.sessions.voice.config import SessionConfig, apply_update
from gateway.sessions.voice.errors import VoiceError
from gateway.sessions.voice.history import ConversationHistory
from gateway.sessions.voice.turn import TurnDetector, TurnSignal

RATE = 24000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """Two sentences of real speech (Piper), float32 at 24 kHz."""

    async def make() -> bytes:
        synth = PiperSynthesizer(RATE, ThreadPoolExecutor(1))
        await synth.start()
        chunks = [c async for c in synth.stream(SynthesisRequest("Good morning. How are you today?"))]
        return b"".join(c.pcm for c in chunks)

    return pcm16_to_float(asyncio.run(make()))


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(RATE * seconds), np.float32)


def test_streaming_vad_matches_whole_stream_and_separates_speech(speech: np.ndarray) -> None:
    audio = np.concatenate([_silence(0.5), speech, _silence(1.0)])
    whole = [w.probability for w in StreamingVAD(RATE).process(audio)]
    vad = StreamingVAD(RATE)
    framed = [w.probability for i in range(0, audio.size, 480) for w in vad.process(audio[i : i + 480])]
    assert len(framed) == len(whole)
    assert np.allclose(framed, whole, atol=1e-4)  # 20 ms frames change nothing
    n_lead = int(0.5 / 0.032) - 2
    assert max(whole[:n_lead]) < 0.2  # leading silence
    assert np.mean(np.asarray(whole) > 0.5) > 0.3  # the speech
    assert max(whole[-20:]) < 0.2  # trailing silence


def test_turn_detector_finds_one_turn_with_its_bounds(speech: np.ndarray) -> None:
    detector = TurnDetector(RATE, SessionConfig().turn_detection)
    audio = np.concatenate([_silence(0.5), speech, _silence(1.0)])
    events = [e for i in range(0, audio.size, 480) for e in detector.feed(audio[i : i + 480])]
    assert [e.signal for e in events] == [TurnSignal.SPEECH_STARTED, TurnSignal.SPEECH_STOPPED]
    speech_ms = speech.size * 1000 // RATE
    assert 350 <= events[0].stream_ms <= 750
    assert abs((events[1].stream_ms - events[0].stream_ms) - speech_ms) < 400
    assert not detector.in_speech


def test_a_long_silence_setting_keeps_a_pause_inside_the_turn(speech: np.ndarray) -> None:
    cfg = SessionConfig().turn_detection.model_copy(update={"silence_duration_ms": 1500})
    detector = TurnDetector(RATE, cfg)
    audio = np.concatenate([speech, _silence(0.8), speech, _silence(2.0)])
    events = [e for i in range(0, audio.size, 480) for e in detector.feed(audio[i : i + 480])]
    assert [e.signal for e in events] == [TurnSignal.SPEECH_STARTED, TurnSignal.SPEECH_STOPPED]


def test_chunker_yields_the_splitter_sentences_while_tokens_stream() -> None:
    text = "Dr. Smith paid 3.50 dollars. It was cheap! Was it? Yes, and then he left"
    chunker = SentenceChunker()
    seen: list[tuple[int, str]] = []
    tokens = text.split(" ")
    for i, token in enumerate(tokens):
        for sentence in chunker.feed(token if i == 0 else " " + token):
            seen.append((i, sentence))
    seen += [(len(tokens), s) for s in chunker.flush()]
    assert [s for _, s in seen] == [span.text for span in split_sentences(text)]
    # Each sentence is released one token after it ends, not at the end of the reply.
    assert [i for i, _ in seen][:3] == [5, 8, 10]
    # The first chunk may be a clause of a long first sentence; "1,000" is no clause boundary.
    chunker = SentenceChunker(first_clause_chars=30)
    text = "It costs 1,000 dollars at the main market, or less online, they say. Really."
    tokens = text.split(" ")
    got = [s for i, t in enumerate(tokens) for s in chunker.feed(t if i == 0 else " " + t)] + chunker.flush()
    assert got == ["It costs 1,000 dollars at the main market,", "or less online, they say.", "Really."]
    assert speakable("**Sure!** Here is `code` and [a link](http://x).") == "Sure! Here is code and ."


def test_history_is_bounded_in_turns_and_tokens() -> None:
    history = ConversationHistory(max_turns=2, max_tokens=1000)
    for n in range(5):
        history.add("user", f"question {n}")
        history.add("assistant", f"answer {n}")
    msgs = history.messages("be brief")
    assert msgs[0].role == "system" and msgs[0].content.startswith("be brief")
    # The dropped turns' user words stay in a note on the system message (issue 21); replies do not.
    assert "- question 0" in msgs[0].content and "answer 0" not in msgs[0].content
    assert [m.content for m in msgs[1:]] == ["question 3", "answer 3", "question 4", "answer 4"]
    history.add("user", "question 5")  # the current question always fits, the oldest turn goes
    assert history.messages("")[1].content == "question 4"

    small = ConversationHistory(max_turns=10, max_tokens=10)  # about 40 characters
    small.add("user", "x" * 30)
    small.add("assistant", "y" * 30)
    small.add("user", "the newest question")
    assert [m.content for m in small.messages("")[1:]] == ["the newest question"]
    history.clear()
    assert len(history) == 0


def test_session_update_validates_and_merges() -> None:
    cfg = SessionConfig()
    off = apply_update(cfg, {"turn_detection": None}, 200)
    assert off.turn_detection.enabled is False and off.turn_detection.threshold == 0.5
    on = apply_update(off, {"turn_detection": {"silence_duration_ms": 800}}, 200)
    assert on.turn_detection.enabled is True and on.turn_detection.silence_duration_ms == 800
    assert apply_update(cfg, {"turn_detection": {"type": "none"}}, 200).turn_detection.enabled is False
    for bad in (
        {"turn_detection": {"threshold": 2}},
        {"turn_detection": {"type": "semantic"}},
        {"turn_detection": 5},
        {"colour": "blue"},
        {"max_response_tokens": 0},
        {"max_response_tokens": 201},
        [],
    ):
        with pytest.raises(VoiceError) as err:
            apply_update(cfg, bad, 200)
        assert err.value.code == "invalid_session_config" and err.value.message


async def test_llm_streams_tokens_and_stops_when_the_consumer_closes() -> None:
    executor = ThreadPoolExecutor(2)
    responder = LlamaResponder(executor, threads=1)
    await responder.start()
    try:
        assert responder.state is ModelState.READY
        assert [m.role for m in responder.models()] == ["omni"]
        request = ConversationRequest(
            history=[ChatMessage("user", "Tell me a long story about a dragon.")], max_tokens=64
        )
        events = [e async for e in responder.respond(request)]
        texts = [e.text for e in events if e.kind == "text"]
        usage = events[-1]
        assert len(texts) > 10 and "".join(texts).strip()
        assert usage.kind == "usage" and usage.completion_tokens == len(texts)
        assert usage.tokens_per_second and usage.tokens_per_second > 0

        stream = responder.respond(request)
        first = [await anext(stream) for _ in range(3)]
        await stream.aclose()  # returns once the generation thread has stopped
        assert not responder._lock.locked()
        assert [e.text for e in first] == texts[:3]  # greedy decoding: the same reply every time
    finally:
        await responder.aclose()
        executor.shutdown()
