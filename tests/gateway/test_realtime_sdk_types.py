"""Every server event of /v1/realtime, in both dialects, validated against the `openai` SDK's own pydantic
event unions with strict validation (exact types, literals and required fields), so an event the SDK's types
do not describe fails here. Driven by the real SDK clients against a real server process.

The SDK's own `recv()` builds events without validating them (`construct_type_unchecked`), so a deviation
passes silently in a client; these tests read the raw frames (`recv_bytes()`) and validate them. Fields the
types do not name are allowed, as the SDK's models allow them (`timings` on `response.done` is this server's
addition)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from openai import AsyncOpenAI
from openai.types.realtime import RealtimeServerEvent as GAServerEvent
from pydantic import TypeAdapter, ValidationError

from tests.gateway.voice_client import aspoken, silence
from tests.support import ServerProcess

try:
    from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
except ImportError:  # an SDK without the beta realtime client
    BetaServerEvent = None  # type: ignore[misc]

WAIT_S = 90  # a bound for a loaded machine; never reached when things work
CHUNK = 4800  # 100 ms of 24 kHz s16le per append

GA: TypeAdapter[Any] = TypeAdapter(GAServerEvent)
BETA: TypeAdapter[Any] | None = TypeAdapter(BetaServerEvent) if BetaServerEvent is not None else None


def ga_client(server: ServerProcess) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


def beta_client(server: ServerProcess) -> AsyncOpenAI:
    # The beta client forces wss:// on an http:// base URL; websocket_base_url is its documented way out.
    ws = server.url.replace("http://", "ws://", 1) + "/v1"
    return AsyncOpenAI(base_url=server.url + "/v1", websocket_base_url=ws, api_key="sk-test", max_retries=0)


def check(adapter: TypeAdapter[Any], raw: bytes, seen: list[dict[str, Any]]) -> dict[str, Any]:
    data = json.loads(raw)
    seen.append(data)
    try:
        adapter.validate_python(data, strict=True)
    except ValidationError as exc:
        # A union's error lists a failure for every member; those not about `type` name the real problem.
        real = [e for e in exc.errors() if e.get("loc", ())[-1:] != ("type",)]
        raise AssertionError(
            f"{data.get('type')!r} does not match the SDK's type: {data}\n{real[:8]}"
        ) from None
    return data


async def until(
    conn: Any, adapter: TypeAdapter[Any], kind: str, seen: list[dict[str, Any]]
) -> dict[str, Any]:
    while True:
        data = check(adapter, await asyncio.wait_for(conn.recv_bytes(), WAIT_S), seen)
        assert data["type"] != "error", data
        if data["type"] == kind:
            return data


async def send(conn: Any, event: dict[str, Any]) -> None:
    """A client event as a plain dict, the way the SDK's `send` accepts it."""
    await conn.send(event)


async def append(conn: Any, pcm: bytes) -> None:
    for i in range(0, len(pcm), CHUNK):
        await send(
            conn,
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + CHUNK]).decode()},
        )


TEXT_ITEM: dict[str, Any] = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "Say hello in three words."}],
}


async def test_ga_text_item_and_response_events_match_the_sdk_types(gateway: ServerProcess) -> None:
    seen: list[dict[str, Any]] = []
    async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, GA, "session.created", seen)
        await send(
            conn, {"type": "session.update", "session": {"type": "realtime", "instructions": "Be brief."}}
        )
        await until(conn, GA, "session.updated", seen)
        await send(conn, {"type": "conversation.item.create", "item": TEXT_ITEM})
        await until(conn, GA, "conversation.item.done", seen)
        await send(conn, {"type": "response.create"})
        done = await until(conn, GA, "response.done", seen)
    assert done["response"]["status"] == "completed", done
    kinds = [e["type"] for e in seen]
    for expected in (
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in kinds, kinds
    parts = [e["part"]["type"] for e in seen if e["type"].startswith("response.content_part.")]
    assert parts == ["audio", "audio"], parts
    # The item's content keeps the GA names (the assistant message type allows only those).
    item = next(e["item"] for e in seen if e["type"] == "response.output_item.done")
    assert [c["type"] for c in item["content"]] == ["output_audio"], item


async def test_ga_transcription_session_events_match_the_sdk_types(gateway: ServerProcess) -> None:
    pcm = await aspoken(gateway.url, "The weather is nice today.")
    seen: list[dict[str, Any]] = []
    async with ga_client(gateway).realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await until(conn, GA, "session.created", seen)
        assert created["session"]["type"] == "transcription"
        await send(
            conn,
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"model": "whisper-1"}}},
                },
            },
        )
        await until(conn, GA, "session.updated", seen)
        await append(conn, silence(0.5) + pcm + silence(1.2))
        completed = await until(conn, GA, "conversation.item.input_audio_transcription.completed", seen)
    assert "weather" in completed["transcript"].lower(), completed


needs_beta = pytest.mark.skipif(BETA is None, reason="the installed openai SDK has no beta realtime client")


@needs_beta
async def test_beta_text_item_and_response_events_match_the_sdk_types(gateway: ServerProcess) -> None:
    assert BETA is not None
    seen: list[dict[str, Any]] = []
    async with beta_client(gateway).beta.realtime.connect(model="gpt-realtime") as conn:
        await until(conn, BETA, "session.created", seen)
        await send(
            conn, {"type": "session.update", "session": {"instructions": "Be brief.", "voice": "alloy"}}
        )
        await until(conn, BETA, "session.updated", seen)
        await send(conn, {"type": "conversation.item.create", "item": TEXT_ITEM})
        await until(conn, BETA, "conversation.item.created", seen)
        await send(conn, {"type": "response.create"})
        done = await until(conn, BETA, "response.done", seen)
    assert done["response"]["status"] == "completed", done
    kinds = [e["type"] for e in seen]
    for expected in ("response.content_part.added", "response.audio.delta", "response.audio_transcript.done"):
        assert expected in kinds, kinds
    assert not any(k.startswith("response.output_") and "item" not in k for k in kinds), kinds


@needs_beta
async def test_beta_transcription_session_events_match_the_sdk_types(gateway: ServerProcess) -> None:
    assert BETA is not None
    pcm = await aspoken(gateway.url, "The weather is nice today.")
    seen: list[dict[str, Any]] = []
    client = beta_client(gateway)
    async with client.beta.realtime.connect(model="", extra_query={"intent": "transcription"}) as conn:
        # The beta union has no `transcription_session.created`: the session opens with `session.created`.
        await until(conn, BETA, "session.created", seen)
        await send(
            conn,
            {
                "type": "transcription_session.update",
                "session": {"input_audio_transcription": {"model": "whisper-1"}},
            },
        )
        updated = await until(conn, BETA, "transcription_session.updated", seen)
        assert "client_secret" in updated["session"], updated
        await append(conn, silence(0.5) + pcm + silence(1.2))
        completed = await until(conn, BETA, "conversation.item.input_audio_transcription.completed", seen)
    assert "weather" in completed["transcript"].lower(), completed


async def test_idle_timeout_triggers_a_response_after_silence(gateway: ServerProcess) -> None:
    seen: list[dict[str, Any]] = []
    async with ga_client(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, GA, "session.created", seen)
        await send(
            conn,
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "instructions": "Be brief.",
                    "output_modalities": ["text"],  # no audio: the idle window opens at response.done
                    "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}},
                },
            },
        )
        updated = await until(conn, GA, "session.updated", seen)
        assert updated["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 5000
        await send(conn, {"type": "conversation.item.create", "item": TEXT_ITEM})
        await send(conn, {"type": "response.create"})
        await until(conn, GA, "response.done", seen)
        # 4 s of silence: under the timeout, nothing happens.
        await append(conn, silence(4.0))
        await send(conn, {"type": "input_audio_buffer.clear"})  # a round trip: every append was handled
        await until(conn, GA, "input_audio_buffer.cleared", seen)
        assert not any(e["type"] == "input_audio_buffer.timeout_triggered" for e in seen), seen
        # 1.5 s more (5.5 s since the reply): the timeout fires, the silence is committed and answered.
        await append(conn, silence(1.5))
        triggered = await until(conn, GA, "input_audio_buffer.timeout_triggered", seen)
        committed = await until(conn, GA, "input_audio_buffer.committed", seen)
        done = await until(conn, GA, "response.done", seen)
    assert committed["item_id"] == triggered["item_id"], (triggered, committed)
    assert triggered["audio_end_ms"] - triggered["audio_start_ms"] >= 5000, triggered
    assert triggered["audio_end_ms"] - triggered["audio_start_ms"] <= 5600, triggered
    assert done["response"]["status"] == "completed", done


# -- a cut by word timing keeps the written token whole (issue 19: "time" kept of "time,") ---------------


def test_a_barge_in_cut_keeps_the_punctuation_of_the_last_word_sent() -> None:
    from gateway.engines.base import WordTiming
    from gateway.sessions.voice.pipeline import _heard
    from gateway.sessions.voice.playout import Segment

    text = "Once upon a time, there was a fox."
    # Piper's word spans exclude punctuation: "time" is text[12:16], its comma at 16.
    starts = [text.index(w) for w in ("Once", "upon", "a ", "time", "there")]
    words = tuple(
        WordTiming(w.strip(), i * 0.3, i * 0.3 + 0.25, s, s + len(w.strip()))
        for i, (w, s) in enumerate(zip(("Once", "upon", "a ", "time", "there"), starts, strict=True))
    )
    seg = Segment(0, text, total_samples=24_000 * 3, sent_samples=int(24_000 * 1.2), words=words)
    kept = _heard(seg, 24_000)
    assert kept == "Once upon a time,", kept
    assert text.split()[: len(kept.split())] == kept.split()


def test_truncation_by_word_timing_keeps_the_punctuation_of_the_last_word_heard() -> None:
    from gateway.sessions.realtime.items import SpokenSpan, WordSpan, cut_at

    text = "Once upon a time, there was a fox."
    bounds = [(0, 4), (5, 9), (10, 11), (12, 16), (18, 23)]
    words = tuple(WordSpan(i * 300.0, i * 300.0 + 250, a, b) for i, (a, b) in enumerate(bounds))
    kept, _ = cut_at(text, [SpokenSpan(0.0, 3000.0, 0, len(text), words)], 1100.0)
    assert kept == "Once upon a time,", kept
