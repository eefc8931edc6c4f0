"""WS /v1/realtime with real clients and real audio: the `openai` SDK's realtime client pointed at the gateway
by its base URL only, speech made by the gateway's own TTS, reply audio transcribed back by its ASR."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

from openai import AsyncOpenAI

from tests.gateway.voice_client import aspoken, silence, transcribe
from tests.support import ServerProcess, wer, words

WAIT_S = 90  # a bound for a loaded machine; never reached when things work
CHUNK = 4800  # 100 ms of 24 kHz s16le per append


def client_for(server: ServerProcess) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


def b64(pcm: bytes) -> str:
    return base64.b64encode(pcm).decode()


async def append(conn: Any, pcm: bytes) -> None:
    for i in range(0, len(pcm), CHUNK):
        await conn.input_audio_buffer.append(audio=b64(pcm[i : i + CHUNK]))


async def events(conn: Any) -> AsyncIterator[Any]:
    while True:
        yield await asyncio.wait_for(conn.recv(), WAIT_S)


async def until(conn: Any, kind: str, log: list[Any] | None = None) -> Any:
    async for ev in events(conn):
        if log is not None:
            log.append(ev)
        assert ev.type != "error", ev
        if ev.type == kind:
            return ev
    raise AssertionError("unreachable")


def audio_of(log: list[Any]) -> bytes:
    return b"".join(base64.b64decode(e.delta) for e in log if e.type == "response.output_audio.delta")


async def test_sdk_spoken_question_server_vad_commits_and_the_answer_is_spoken(
    gateway: ServerProcess,
) -> None:
    question = "What is the capital of France?"
    pcm = await aspoken(gateway.url, question)
    async with client_for(gateway).realtime.connect(model="gpt-realtime") as conn:
        created = await until(conn, "session.created")
        assert created.session.type == "realtime"
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "You are a helpful assistant. Answer in one short sentence.",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        updated = await until(conn, "session.updated")
        assert updated.session.audio.input.turn_detection.silence_duration_ms == 500
        await append(conn, silence(0.5) + pcm + silence(1.0))  # no commit: server VAD ends the turn
        log: list[Any] = []
        done = await until(conn, "response.done", log)
    kinds = [e.type for e in log]
    for expected in (
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_audio.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in kinds, (expected, kinds)
    assert kinds.index("input_audio_buffer.committed") < kinds.index("response.created")
    started = next(e for e in log if e.type == "input_audio_buffer.speech_started")
    committed = next(e for e in log if e.type == "input_audio_buffer.committed")
    assert started.item_id == committed.item_id
    transcript = next(e for e in log if e.type == "conversation.item.input_audio_transcription.completed")
    assert transcript.item_id == committed.item_id
    assert wer(question, transcript.transcript) <= 0.2, transcript.transcript
    deltas = [e.delta for e in log if e.type == "conversation.item.input_audio_transcription.delta"]
    assert "".join(deltas) == transcript.transcript
    assert done.response.status == "completed"
    assert done.response.usage.output_tokens > 0
    reply = audio_of(log)
    assert len(reply) > 24000  # more than half a second of speech
    heard = await asyncio.to_thread(transcribe, gateway.url, reply)
    assert heard.strip(), "the reply audio transcribes to nothing"
    spoken = done.response.output[0].content[0].transcript
    assert spoken and wer(spoken, heard) <= 0.5, (spoken, heard)


async def test_sdk_cancel_stops_deltas_then_truncate_keeps_only_what_was_heard(
    gateway: ServerProcess,
) -> None:
    async with client_for(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        await until(conn, "session.updated")
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Tell me a long story about a brave knight and a dragon."}
                ],
            }
        )
        await until(conn, "conversation.item.added")
        await conn.response.create()
        log: list[Any] = []
        await until(conn, "response.output_audio.delta", log)
        # One response at a time, as OpenAI: a second response.create is refused by name.
        await conn.send({"type": "response.create", "event_id": "evt_second"})
        while (ev := await asyncio.wait_for(conn.recv(), WAIT_S)).type != "error":
            log.append(ev)
        assert (ev.error.code, ev.error.event_id) == (
            "conversation_already_has_active_response",
            "evt_second",
        )
        while len(audio_of(log)) < 2 * 24000 * 1.5:  # let 1.5 s of the reply play, then cancel
            await until(conn, "response.output_audio.delta", log)
        await conn.response.cancel()
        after: list[Any] = []
        done = await until(conn, "response.done", after)
        assert done.response.status == "cancelled"
        assert done.response.status_details.reason == "client_cancelled"
        # The few deltas already on the wire when the cancel arrived, then none: pacing keeps the lead small.
        late = audio_of(after)
        assert len(late) <= 24000 * 2 * 1.0, f"{len(late) / 48000:.2f} s of audio after the cancel"
        item = done.response.output[0]
        assert item.status == "incomplete"
        kept = item.content[0].transcript or ""
        received_ms = (len(audio_of(log)) + len(late)) * 1000 // 48000
        between: list[Any] = []  # everything after response.done, until the next response

        # The item's audio is exactly what the client received: cutting there changes nothing...
        await conn.conversation.item.truncate(item_id=item.id, content_index=0, audio_end_ms=received_ms)
        await until(conn, "conversation.item.truncated", between)
        await conn.send({"type": "conversation.item.retrieve", "item_id": item.id})
        assert (await until(conn, "conversation.item.retrieved", between)).item.content[0].transcript == kept
        # ...and when the user heard only the first 300 ms, the server forgets the rest.
        await conn.conversation.item.truncate(item_id=item.id, content_index=0, audio_end_ms=300)
        truncated = await until(conn, "conversation.item.truncated", between)
        assert (truncated.item_id, truncated.audio_end_ms) == (item.id, 300)
        await conn.send({"type": "conversation.item.retrieve", "item_id": item.id})
        retrieved = await until(conn, "conversation.item.retrieved", between)
        heard = retrieved.item.content[0].transcript or ""
        assert len(heard.split()) <= 2, heard  # ~2.5 words a second: at most the first word or two
        assert kept.startswith(heard) and len(heard) < max(1, len(kept)), (heard, kept)

        # Truncating beyond the item's audio is an error naming the event; the session goes on.
        await conn.send(
            {
                "type": "conversation.item.truncate",
                "event_id": "evt_too_far",
                "item_id": item.id,
                "content_index": 0,
                "audio_end_ms": 60_000,
            }
        )
        err = await until_error(conn)
        assert err.error.event_id == "evt_too_far" and err.error.param == "audio_end_ms"

        # A second turn answers from the truncated history.
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What is 2 plus 2?"}],
            }
        )
        await until(conn, "conversation.item.added", between)
        assert not [e for e in between if e.type.startswith("response.")]  # the cancelled reply stays silent
        await conn.response.create(response={"instructions": "Answer with one short sentence."})
        second = await until(conn, "response.done")
        assert second.response.status == "completed"
        assert (second.response.output[0].content[0].transcript or "").strip()


async def until_error(conn: Any) -> Any:
    async for ev in events(conn):
        if ev.type == "error":
            return ev
    raise AssertionError("unreachable")


async def test_sdk_transcription_session_produces_the_spoken_words(gateway: ServerProcess) -> None:
    text = "The quick brown fox jumps over the lazy dog near the river bank."
    pcm = await aspoken(gateway.url, text)
    client = client_for(gateway)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        created = await until(conn, "session.created")
        assert created.session.type == "transcription"
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        await until(conn, "session.updated")
        # Near real time, so the live captions have speech to work on while it is still coming.
        audio = silence(0.3) + pcm + silence(1.0)
        for i in range(0, len(audio), CHUNK):
            await conn.input_audio_buffer.append(audio=b64(audio[i : i + CHUNK]))
            await asyncio.sleep(0.05)
        log: list[Any] = []
        completed = await until(conn, "conversation.item.input_audio_transcription.completed", log)
        # Nothing else is on its way: a transcription session makes no responses.
        await conn.send({"type": "response.create", "event_id": "evt_no_reply"})
        err = await until_error(conn)
        assert err.error.event_id == "evt_no_reply"
    assert wer(text, completed.transcript) <= 0.2, completed.transcript
    deltas = [e.delta for e in log if e.type == "conversation.item.input_audio_transcription.delta"]
    assert deltas, "no transcript deltas"
    # Words once sent are never taken back; the final transcript may still differ in a word it re-heard.
    assert wer(completed.transcript, "".join(deltas)) <= 0.15, (deltas, completed.transcript)
    assert len(words("".join(deltas))) == len(words(completed.transcript))
    assert not [e for e in log if e.type.startswith("response.")]


async def test_sdk_barge_in_with_server_vad_cancels_the_reply_and_answers_the_new_turn(
    gateway: ServerProcess,
) -> None:
    first_q = await aspoken(gateway.url, "Tell me a long story about the ocean and its creatures.")
    second_q = await aspoken(gateway.url, "Stop. How many days are in a week?")
    async with client_for(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {
                    "input": {
                        "transcription": {"model": "whisper-1"},
                        "turn_detection": {
                            "type": "server_vad",
                            "silence_duration_ms": 500,
                            "create_response": True,
                            "interrupt_response": True,
                        },
                    }
                },
            }
        )
        await until(conn, "session.updated")
        await append(conn, silence(0.3) + first_q + silence(0.8))
        first: list[Any] = []
        await until(conn, "response.output_audio.delta", first)
        created = next(e for e in first if e.type == "response.created")
        # The user talks over the reply: the VAD hears it, the reply stops, the new turn is answered.
        await append(conn, second_q + silence(0.8))
        log: list[Any] = []
        cancelled = await until(conn, "response.done", log)
        assert cancelled.response.id == created.response.id
        assert cancelled.response.status == "cancelled"
        assert cancelled.response.status_details.reason == "turn_detected"
        assert "input_audio_buffer.speech_started" in [e.type for e in log]
        kept = cancelled.response.output[0].content[0].transcript or ""
        streamed = "".join(e.delta for e in first + log if e.type == "response.output_audio_transcript.delta")
        assert len(kept) <= len(streamed.strip())  # only what was sent stays in the conversation
        transcript = await until(conn, "conversation.item.input_audio_transcription.completed")
        assert wer("Stop. How many days are in a week?", transcript.transcript) <= 0.3, transcript.transcript
        second = await until(conn, "response.created")
        assert second.response.id != created.response.id
        await until(conn, "response.output_audio.delta")


async def test_sdk_telephony_g711_audio_item_then_response(gateway: ServerProcess) -> None:
    """A phone bridge's session: μ-law at 8 kHz both ways, the user's turn sent as a whole audio item."""
    import httpx

    from gateway.audio.pcm import wav_bytes
    from gateway.sessions.realtime.audio import G711_ULAW, InputDecoder, OutputEncoder

    question = "How many legs does a spider have?"
    ulaw = OutputEncoder(G711_ULAW, 24000).encode(await aspoken(gateway.url, question))
    async with client_for(gateway).realtime.connect(model="gpt-realtime") as conn:
        await until(conn, "session.created")
        fmt = {"type": "audio/pcmu"}
        await conn.session.update(
            session={
                "type": "realtime",
                "audio": {"input": {"format": fmt, "turn_detection": None}, "output": {"format": fmt}},
            }
        )
        updated = await until(conn, "session.updated")
        assert updated.session.audio.output.format.type == "audio/pcmu"
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": b64(ulaw)}]}
        )
        added = await until(conn, "conversation.item.added")
        # Telephone quality (8 kHz μ-law) through a model trained on wide-band speech.
        assert wer(question, added.item.content[0].transcript) <= 0.3, added.item.content[0].transcript
        await conn.response.create(
            response={"instructions": "Answer in one short sentence.", "max_output_tokens": 40}
        )
        log: list[Any] = []
        done = await until(conn, "response.done", log)
    assert done.response.status == "completed"
    reply_ulaw = audio_of(log)
    assert len(reply_ulaw) > 8000 * 0.5  # one byte per sample at 8 kHz: over half a second
    pcm8k = InputDecoder(G711_ULAW, 8000).decode(reply_ulaw)
    files = {"audio": ("reply.wav", wav_bytes(pcm8k, 8000), "audio/wav")}
    async with httpx.AsyncClient(timeout=WAIT_S) as http:
        r = await http.post(f"{gateway.url}/voice/transcribe", files=files, data={"language": "en"})
    assert r.status_code == 200 and r.json()["text"].strip(), r.text
