"""Unit tests of the Realtime adapter's pieces that need no server: event parsing, session config in both
dialects, the item store with truncation, audio codecs, server event naming."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gateway.sessions.realtime import audio as rt_audio
from gateway.sessions.realtime.config import apply_session_update, initial_config, render_session
from gateway.sessions.realtime.items import (
    ContentPart,
    Item,
    ItemStore,
    SpokenSpan,
    WordSpan,
    heard_offset,
    item_from_param,
)
from gateway.sessions.realtime.protocol import (
    ConversationItemCreate,
    ConversationItemTruncate,
    RealtimeError,
    ResponseCreate,
    parse_client_event,
)
from gateway.sessions.realtime.wire import Wire, wants_beta


def bad(raw: object) -> RealtimeError:
    with pytest.raises(RealtimeError) as info:
        parse_client_event(raw if isinstance(raw, str) else json.dumps(raw))
    return info.value


# -- client events ---------------------------------------------------------------------------------------


def test_parses_ga_and_beta_client_events() -> None:
    ev = parse_client_event(
        json.dumps(
            {"type": "conversation.item.truncate", "item_id": "i", "content_index": 0, "audio_end_ms": 5}
        )
    )
    assert isinstance(ev, ConversationItemTruncate) and ev.audio_end_ms == 5
    ev = parse_client_event(json.dumps({"type": "response.create", "response": {"modalities": ["text"]}}))
    assert isinstance(ev, ResponseCreate) and ev.response is not None and ev.response.modalities == ["text"]
    ev = parse_client_event(
        json.dumps(
            {
                "type": "conversation.item.create",
                "event_id": "c1",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            }
        )
    )
    assert isinstance(ev, ConversationItemCreate) and ev.event_id == "c1"


@pytest.mark.parametrize(
    ("raw", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ([1, 2], "invalid_json", None),
        ({"event_id": "e"}, "missing_required_parameter", "type"),
        ({"type": "response.explode", "event_id": "e"}, "invalid_event_type", "type"),
        ({"type": "input_audio_buffer.append", "event_id": "e"}, "missing_required_parameter", "audio"),
        ({"type": "input_audio_buffer.commit", "event_id": "e", "extra": 1}, "unknown_parameter", "extra"),
        (
            {
                "type": "conversation.item.truncate",
                "event_id": "e",
                "item_id": "x",
                "content_index": 0,
                "audio_end_ms": -5,
            },
            "invalid_value",
            "audio_end_ms",
        ),
        (
            {"type": "response.create", "event_id": "e", "response": {"bogus": True}},
            "unknown_parameter",
            "response.bogus",
        ),
    ],
)
def test_malformed_events_name_the_problem(raw: object, code: str, param: str | None) -> None:
    err = bad(raw)
    assert err.code == code
    assert err.param == param
    if isinstance(raw, dict) and "event_id" in raw:
        assert err.event_id == "e"


# -- session config ----------------------------------------------------------------------------------------


def test_session_update_ga_shape() -> None:
    cfg = initial_config(None, "gpt-realtime")
    cfg = apply_session_update(
        cfg,
        {
            "type": "realtime",
            "instructions": "Be brief.",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "whisper-1"},
                    "turn_detection": {
                        "type": "server_vad",
                        "silence_duration_ms": 400,
                        "create_response": False,
                    },
                },
                "output": {"voice": "marin", "format": {"type": "audio/pcmu"}},
            },
            "tools": [],
        },
    )
    assert cfg.instructions == "Be brief."
    assert cfg.turn_detection is not None and cfg.turn_detection.silence_duration_ms == 400
    assert cfg.turn_detection.create_response is False and cfg.turn_detection.interrupt_response is True
    assert cfg.output_format.name == "g711_ulaw" and cfg.engine_voice == "default"
    rendered = render_session(cfg, "sess_1", beta=False)
    assert rendered["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 400
    assert rendered["audio"]["output"]["format"] == {"type": "audio/pcmu"}


def test_session_update_beta_shape_and_vad_off() -> None:
    cfg = apply_session_update(
        initial_config(None, None),
        {
            "modalities": ["text", "audio"],
            "voice": "alloy",
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": None,
            "temperature": 0.8,
        },
    )
    assert cfg.turn_detection is None and cfg.transcription is not None
    beta = render_session(cfg, "sess_1", beta=True)
    assert beta["turn_detection"] is None and beta["input_audio_format"] == "pcm16"
    # a partial turn_detection update keeps the other fields
    cfg = apply_session_update(cfg, {"turn_detection": {"type": "server_vad", "threshold": 0.6}})
    cfg = apply_session_update(cfg, {"turn_detection": {"silence_duration_ms": 800}})
    assert cfg.turn_detection is not None
    assert (cfg.turn_detection.threshold, cfg.turn_detection.silence_duration_ms) == (0.6, 800)


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"voise": "alloy"}, "session.voise"),
        ({"turn_detection": {"type": "server_vad", "threshold": 3}}, "session.turn_detection.threshold"),
        ({"audio": {"input": {"format": {"type": "audio/flac"}}}}, "session.audio.input.format"),
        (
            {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
            "session.audio.input.format.rate",
        ),
        ({"type": "transcription"}, "session.type"),
        ({"output_modalities": ["video"]}, "session.output_modalities"),
        ({"audio": {"output": {"speed": 9}}}, "session.audio.output.speed"),
    ],
)
def test_session_update_errors_name_the_parameter(session: dict[str, object], param: str) -> None:
    with pytest.raises(RealtimeError) as info:
        apply_session_update(initial_config(None, None), session)
    assert info.value.param == param


def test_transcription_session_selected_by_intent() -> None:
    cfg = initial_config("transcription", None)
    assert cfg.type == "transcription" and cfg.transcription is not None
    cfg = apply_session_update(
        cfg,
        {"input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en"}},
        transcription_event=True,
    )
    assert cfg.transcription is not None and cfg.transcription.language == "en"
    assert render_session(cfg, "s", beta=False)["type"] == "transcription"
    with pytest.raises(RealtimeError):
        apply_session_update(initial_config(None, None), {}, transcription_event=True)


# -- items and truncation ----------------------------------------------------------------------------------


def assistant_item(text: str, spans: list[SpokenSpan], audio_ms: float) -> Item:
    return Item(
        "item_a", "assistant", [ContentPart("output_audio", transcript=text, audio_ms=audio_ms, spans=spans)]
    )


def test_truncate_keeps_only_heard_words_by_sentence_timing() -> None:
    text = "The sky is blue. Grass is green and wet."
    s1, s2 = (0, 16), (17, len(text))
    spans = [SpokenSpan(0, 1000, *s1), SpokenSpan(1000, 3000, *s2)]
    item = assistant_item(text, spans, 3000)
    item.truncate(0, 1500)  # a quarter into the second sentence
    assert item.content[0].transcript == "The sky is blue. Grass"
    assert item.content[0].audio_ms == 1500
    item.truncate(0, 1200)  # again, shorter: "Grass" (1000-1500 ms now) is not half heard by 1200 ms
    assert item.content[0].transcript == "The sky is blue."
    item.truncate(0, 700)  # inside the first sentence: its last word is not yet half heard
    assert item.content[0].transcript == "The sky is"


def test_truncate_uses_word_timings_when_present() -> None:
    text = "Hello there friend."
    words = (WordSpan(0, 300, 0, 5), WordSpan(300, 500, 6, 11), WordSpan(900, 1400, 12, 19))
    item = assistant_item(text, [SpokenSpan(0, 1500, 0, len(text), words)], 1500)
    item.truncate(0, 1000)  # "friend." has started but not reached its middle
    assert item.content[0].transcript == "Hello there"


def test_truncate_errors() -> None:
    item = assistant_item("Hi.", [SpokenSpan(0, 500, 0, 3)], 500)
    with pytest.raises(RealtimeError) as info:
        item.truncate(0, 501)
    assert info.value.param == "audio_end_ms"
    with pytest.raises(RealtimeError):
        item.truncate(1, 10)
    user = Item("item_u", "user", [ContentPart("input_text", text="hi")])
    with pytest.raises(RealtimeError):
        user.truncate(0, 0)
    assert heard_offset("Hi.", [SpokenSpan(0, 500, 0, 3)], 500) == 3


def test_item_store_order_delete_and_history() -> None:
    store = ItemStore(max_items=3)

    def make(item_id: str, role: str, text: str) -> Item:
        return Item(
            item_id, role, [ContentPart("output_text" if role == "assistant" else "input_text", text=text)]
        )

    assert store.add(make("a", "user", "one")) is None
    assert store.add(make("b", "assistant", "two")) == "a"
    assert store.add(make("c", "user", "zero"), previous_item_id="root") is None
    assert [i.id for i in store] == ["c", "a", "b"]
    store.add(make("d", "user", "three"))  # over the bound: the oldest goes
    assert [i.id for i in store] == ["a", "b", "d"]
    store.delete("b")
    assert [(m.role, m.content) for m in store.messages()] == [("user", "one"), ("user", "three")]
    with pytest.raises(RealtimeError) as info:
        store.delete("zzz")
    assert info.value.code == "item_not_found"
    with pytest.raises(RealtimeError):
        store.add(make("a", "user", "dup"))


def test_item_from_param_validates_roles() -> None:
    ev = parse_client_event(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            }
        )
    )
    assert isinstance(ev, ConversationItemCreate)
    item = item_from_param(ev.item)
    assert item.content[0].type == "output_text" and item.wire(beta=True)["content"][0]["type"] == "text"
    ev = parse_client_event(
        json.dumps(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_audio", "audio": ""}],
                },
            }
        )
    )
    assert isinstance(ev, ConversationItemCreate)
    with pytest.raises(RealtimeError) as info:
        item_from_param(ev.item)
    assert info.value.param == "item.content.0.type"


# -- audio -------------------------------------------------------------------------------------------------


def test_base64_pcm_and_g711_round_trip() -> None:
    with pytest.raises(rt_audio.AudioPayloadError):
        rt_audio.decode_base64("not base64!!")
    with pytest.raises(rt_audio.AudioPayloadError):
        rt_audio.InputDecoder(rt_audio.PCM16, 24000).decode(b"\x00\x01\x02")
    tone = (np.sin(np.arange(24000) / 24000 * 2 * np.pi * 440) * 12000).astype("<i2").tobytes()
    for fmt in (rt_audio.G711_ULAW, rt_audio.G711_ALAW):
        wire = rt_audio.OutputEncoder(fmt, 24000).encode(tone)
        assert len(wire) == pytest.approx(8000, abs=200)
        back = np.frombuffer(rt_audio.InputDecoder(fmt, 24000).decode(wire), "<i2").astype(np.float64)
        ref = np.frombuffer(tone, "<i2").astype(np.float64)[: back.size]
        # resampler delay aside, the tone survives: same energy, same pitch
        assert np.sqrt(np.mean(back**2)) == pytest.approx(np.sqrt(np.mean(ref**2)), rel=0.1)
        spectrum = np.abs(np.fft.rfft(back))
        assert abs(np.argmax(spectrum) * 24000 / back.size - 440) < 5


# -- wire ----------------------------------------------------------------------------------------------------


def test_dialects() -> None:
    ga, beta = Wire(beta=False), Wire(beta=True)
    assert ga.name("response.output_audio.delta") == "response.output_audio.delta"
    assert beta.name("response.output_audio.delta") == "response.audio.delta"
    assert beta.name("conversation.item.added") == "conversation.item.created"
    assert beta.event("conversation.item.done") is None
    assert Wire(beta=True, transcription=True).name("session.updated") == "transcription_session.updated"
    assert wants_beta({"openai-beta": "realtime=v1"}, []) and wants_beta({}, ["openai-beta.realtime-v1"])
    assert not wants_beta({}, ["realtime"])
    err = Wire.error(RealtimeError("item_not_found", "nope", param="item_id", event_id="ev_1"))
    assert err["error"]["event_id"] == "ev_1" and err["code"] == "item_not_found"


def test_the_engine_history_holds_only_the_heard_part_after_truncation() -> None:
    from gateway.sessions.realtime.session import ItemHistory

    store = ItemStore()
    store.add(Item("item_u", "user", [ContentPart("input_audio", transcript="Tell me about the sea.")]))
    text = "The sea is vast. It covers most of the planet."
    store.add(assistant_item(text, [SpokenSpan(0, 1200, 0, 16), SpokenSpan(1200, 3000, 17, len(text))], 3000))
    store.add(Item("item_x", "assistant", [], status="in_progress"))  # a reply being made is not history yet
    store.get("item_a").truncate(0, 1200)
    history = ItemHistory(store, max_tokens=1024).messages("Be brief.")
    assert [(m.role, m.content) for m in history] == [
        ("system", "Be brief."),
        ("user", "Tell me about the sea."),
        ("assistant", "The sea is vast."),
    ]


def test_items_left_out_of_the_window_leave_the_users_words_in_a_note() -> None:
    """As /voice's memory: the user's words from items the budget leaves out go into the system message
    (gateway/text/facts.py reads them back), the assistant's do not, and a deleted item is forgotten."""
    from gateway.sessions.realtime.session import ItemHistory
    from gateway.text.facts import EARLIER_HEADING, extract, split_earlier

    def user(item_id: str, text: str) -> Item:
        return Item(item_id, "user", [ContentPart("input_text", text=text)])

    def reply(item_id: str) -> Item:
        return Item(
            item_id, "assistant", [ContentPart("output_text", text="A long reply that fills it. " * 4)]
        )

    store = ItemStore()
    store.add(user("u0", "Hi, my name is Sam."))
    store.add(reply("a0"))
    store.add(user("u1", "I have 3 cats."))
    store.add(user("u2", "I live in Lisbon."))
    for n in range(6):
        store.add(user(f"q{n}", f"Tell me more about the sea, part {'ABCDEF'[n]}."))
        store.add(reply(f"r{n}"))
    store.add(user("last", "What is my name?"))
    store.delete("u2")  # the client removed it: the model must not be told it
    system, *kept = ItemHistory(store, max_tokens=60).messages("Be brief.")  # about 240 characters
    assert kept[-1].content == "What is my name?" and all("Sam" not in m.content for m in kept)
    assert system.content.startswith("Be brief.") and EARLIER_HEADING in system.content
    facts = extract(split_earlier(system.content)[1])
    assert facts.name == "Sam" and "I have 3 cats." in facts.statements
    assert "Lisbon" not in system.content and "fills it" not in system.content
    # Within its window nothing is noted.
    assert ItemHistory(store, max_tokens=4096).messages("Be brief.")[0].content == "Be brief."


def test_a_reply_cut_short_keeps_the_words_heard_by_word_timing() -> None:
    """The core's segments (sentence text, samples made and sent, word timings) -> the item's transcript."""
    from types import SimpleNamespace

    from gateway.engines.base import WordTiming
    from gateway.sessions.realtime.session import RealtimeConnection
    from gateway.sessions.voice.events import ResponseDone
    from gateway.sessions.voice.playout import Segment

    rate = 1000  # one sample a millisecond keeps the arithmetic readable
    first = Segment(0, "Hello there.", 800, 800)
    words = (
        WordTiming("The", 0.0, 0.2, 0, 3),
        WordTiming("sea", 0.2, 0.6, 4, 7),
        WordTiming("is", 0.6, 0.7, 8, 10),
        WordTiming("vast.", 0.7, 1.2, 11, 16),
    )
    second = Segment(1, "The sea is vast.", 1200, 500, words)  # sent up to 0.5 s: "sea" is half heard by 0.4
    event = ResponseDone("resp_1", "interrupted", "Hello there. The sea", 1300, segments=(first, second))
    text, spans = RealtimeConnection._spoken(SimpleNamespace(rate=rate), event)  # type: ignore[arg-type]
    assert text == "Hello there. The sea"
    assert [(s.start_ms, s.end_ms) for s in spans] == [(0, 800), (800, 1300)]
    part = ContentPart("output_audio", transcript=text, audio_ms=1300, spans=spans)
    item = Item("item_r", "assistant", [part])
    item.truncate(0, 1050)  # "The" (800-1000) heard, "sea" (1000-1400) not half heard
    assert part.transcript == "Hello there. The"
