"""WS /voice against the real server (embedded engine): spoken questions in, spoken answers out.

The questions are spoken by the gateway's own TTS and streamed as 20 ms PCM frames; answers are transcribed
back with its ASR. Replies are kept short (max_response_tokens) so the suite stays quick.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.voice_client import RATE, VoiceClient, aspoken, silence, transcribe
from tests.support import ServerProcess, wer

MANUAL = {"turn_detection": None, "max_response_tokens": 24}
QUESTION = "What is the capital of France?"
STORY = "Tell me a long story about a brave dragon."


def _metric_sync(base_url: str, name: str, labels: dict[str, str]) -> float | None:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def _metric(base_url: str, name: str, labels: dict[str, str]) -> float | None:
    return await asyncio.to_thread(_metric_sync, base_url, name, labels)


async def _ask(client: VoiceClient, base_url: str, text: str) -> dict:
    await client.stream(await aspoken(base_url, text))
    await client.send("audio.commit")
    return await client.wait_for("response.done")


def test_models_and_health_show_the_conversation_model(gateway: ServerProcess) -> None:
    models = httpx.get(f"{gateway.url}/models", timeout=10).json()["models"]
    omni = next(m for m in models if m["role"] == "omni")
    assert "SmolLM2" in omni["id"] and omni["state"] == "ready"
    health = httpx.get(f"{gateway.url}/health", timeout=10).json()
    assert health["components"]["omni"]["ready"] is True


async def test_spoken_question_gets_a_spoken_answer(gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(gateway.ws_url, **MANUAL)
    try:
        assert client.session["input_audio"] == {"format": "pcm_s16le", "sample_rate": RATE, "channels": 1}
        assert client.session["turn_detection"]["enabled"] is False
        done = await _ask(client, gateway.url, QUESTION)
    finally:
        await client.close()

    committed = client.events("audio.committed")[0]
    assert committed["auto"] is False and committed["audio_ms"] > 1000
    transcript = client.events("transcript")[0]
    assert wer(QUESTION, transcript["text"]) <= 0.2, transcript
    started = client.events("response.started")[0]
    assert started["item_id"] == committed["item_id"] == transcript["item_id"]

    assert done["status"] == "completed" and done["response_id"] == started["response_id"]
    streamed = client.text_of(done["response_id"])
    assert streamed.strip() and done["text"] == streamed
    assert 0 < done["usage"]["completion_tokens"] <= MANUAL["max_response_tokens"]
    # Everything that was sent arrived, in order: events before the first frame, audio before done.
    assert done["audio_ms"] == len(client.audio) * 1000 // (2 * RATE) > 300
    order = [e["type"] if isinstance(e, dict) else "audio" for e in client.log]
    assert order.index("transcript") < order.index("response.started") < order.index("audio")
    assert order.index("audio") < order.index("response.done")
    timings = done["timings"]
    for stage in ("asr_ms", "llm_first_token_ms", "llm_first_sentence_ms", "tts_first_chunk_ms"):
        assert timings[stage] is not None and timings[stage] > 0, timings
    assert 0 < timings["first_audio_ms"] <= timings["total_ms"]
    assert timings["asr_ms"] < timings["first_audio_ms"]

    heard = await asyncio.to_thread(transcribe, gateway.url, bytes(client.audio))
    assert heard.strip(), "the reply audio transcribes to nothing"
    assert wer(done["text"], heard) < 0.5, (done["text"], heard)


async def test_server_vad_commits_the_turn_on_trailing_silence(gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(gateway.ws_url, max_response_tokens=8)
    try:
        assert client.session["turn_detection"]["enabled"] is True  # the default
        speech = await aspoken(gateway.url, QUESTION)
        await client.stream(silence(0.5) + speech + silence(1.0))
        started = await client.wait_for("speech.started")
        stopped = await client.wait_for("speech.stopped")
        committed = await client.wait_for("audio.committed")
        transcript = await client.wait_for("transcript")
        await client.wait_for("response.done")
        # A pause shorter than silence_duration_ms stays inside the turn: the words after it are heard too
        # (a transcript made early, during the pause, must not be used).
        first, second = "Good morning.", "Please tell me the time in London."
        pause = silence(0.15)  # with the voice's own tails: a gap of about 300 ms
        await client.stream(
            await aspoken(gateway.url, first) + pause + await aspoken(gateway.url, second) + silence(1.0)
        )
        paused = await client.wait_for("transcript")
        await client.wait_for("response.done")
    finally:
        await client.close()
    assert wer(f"{first} {second}", paused["text"]) <= 0.2, paused
    assert len(client.events("audio.committed")) == 2
    speech_ms = len(speech) * 1000 // (2 * RATE)
    # Speech really begins after the 500 ms of leading silence and ends about a speech-length later.
    assert 350 <= started["audio_start_ms"] <= 800, started
    assert speech_ms - 400 <= stopped["audio_end_ms"] - started["audio_start_ms"] <= speech_ms + 300
    assert committed["auto"] is True
    assert wer(QUESTION, transcript["text"]) <= 0.2, transcript


async def test_interrupt_stops_audio_at_once_and_keeps_only_what_was_sent(gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(gateway.ws_url, turn_detection=None, max_response_tokens=120)
    try:
        await client.stream(await aspoken(gateway.url, STORY))
        await client.send("audio.commit")
        await client.wait_for("response.started")
        await client.wait_audio(RATE * 2 * 1)  # one second of the answer
        await client.send("interrupt")
        interrupted = await client.wait_for("interrupted")
        audio_at_interrupt = len(client.audio)
        done = await client.wait_for("response.done")
        # The connection goes on: a second turn is answered normally.
        await client.send("ping", id=7)
        assert (await client.wait_for("pong"))["id"] == 7
        second = await _ask(client, gateway.url, QUESTION)
    finally:
        await client.close()

    assert interrupted["reason"] == "client" and interrupted["response_id"] == done["response_id"]
    # Not one frame after `interrupted` (until the next reply), and the server's count is exactly what
    # the client received.
    at = client.log.index(interrupted)
    next_reply = client.log.index(client.events("response.started")[1])
    assert not [e for e in client.log[at:next_reply] if isinstance(e, int)]
    assert sum(e for e in client.log[:at] if isinstance(e, int)) == audio_at_interrupt
    assert interrupted["audio_sent_ms"] == audio_at_interrupt * 1000 // (2 * RATE)
    assert interrupted["audio_sent_ms"] < 3000  # stopped long before the story's end
    # The history keeps only the words the user heard: a prefix of what the model wrote.
    written = client.text_of(done["response_id"]).split()
    kept = interrupted["text"].split()
    assert kept and kept == written[: len(kept)] and len(kept) < len(written), (kept, written)
    assert done["status"] == "interrupted" and done["text"] == interrupted["text"]
    assert second["status"] == "completed" and second["text"].strip()


async def test_speech_during_the_reply_barges_in(gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(gateway.ws_url, max_response_tokens=120)
    try:
        await client.stream(await aspoken(gateway.url, STORY) + silence(0.8))
        first = await client.wait_for("response.started")
        await client.wait_audio(RATE * 2 // 2)
        # The user talks over the answer, then pauses: the reply stops and the new question is answered.
        await client.stream(await aspoken(gateway.url, QUESTION) + silence(0.8))
        interrupted = await client.wait_for("interrupted")
        transcript = await client.wait_for("transcript")
        second = await client.wait_for("response.done")
        while second["response_id"] == first["response_id"]:
            second = await client.wait_for("response.done")
    finally:
        await client.close()
    assert interrupted["reason"] == "speech" and interrupted["response_id"] == first["response_id"]
    assert wer(QUESTION, transcript["text"]) <= 0.2, transcript
    assert second["status"] == "completed"


async def test_second_turn_can_use_the_first(gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(gateway.ws_url, turn_detection=None, max_response_tokens=16)
    try:
        await _ask(client, gateway.url, "I have a dog called Max.")
        second = await _ask(client, gateway.url, "What is my dog called?")
    finally:
        await client.close()
    assert client.events("transcript")[0]["text"].lower().count("max") == 1
    assert "max" in second["text"].lower(), second  # only the first turn said the name


async def test_every_error_is_an_event_and_the_connection_stays_usable(gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(gateway.ws_url, turn_detection=None)
    limit_s = client.session["limits"]["max_input_seconds"]
    try:
        cases = []
        await client.ws.send(b"\x01\x02\x03")
        cases.append(("odd_length_frame", await client.wait_for("error")))
        await client.ws.send("{not json")
        cases.append(("invalid_json", await client.wait_for("error")))
        await client.ws.send("[1, 2]")
        cases.append(("invalid_event", await client.wait_for("error")))
        await client.send("dance")
        cases.append(("unknown_event", await client.wait_for("error")))
        await client.send("audio.commit")
        cases.append(("empty_audio_buffer", await client.wait_for("error")))
        await client.send("interrupt")
        cases.append(("no_active_response", await client.wait_for("error")))
        await client.send("session.update", session={"voice": "nobody"})
        cases.append(("unknown_voice", await client.wait_for("error")))
        await client.send("session.update", session={"language": "xx"})
        cases.append(("unsupported_language", await client.wait_for("error")))
        await client.send("session.update", session={"turn_detection": {"threshold": 3}})
        cases.append(("invalid_session_config", await client.wait_for("error")))
        await client.send("session.update", session={"max_response_tokens": 10**6})
        cases.append(("invalid_session_config", await client.wait_for("error")))
        # Over the input limit: one error, the excess dropped, the buffer still usable.
        await client.ws.send(silence(limit_s - 0.5))
        await client.ws.send(silence(1.0))
        cases.append(("input_audio_too_long", await client.wait_for("error")))
        await client.ws.send(silence(1.0))
        await client.send("audio.clear")
        await client.wait_for("audio.cleared")
        # Silence only: committed, but nothing was said.
        await client.ws.send(silence(1.0))
        await client.send("audio.commit")
        cases.append(("no_speech", await client.wait_for("error")))
        await client.send("ping")
        assert (await client.wait_for("pong"))["type"] == "pong"
    finally:
        await client.close()
    for code, event in cases:
        assert event["code"] == code and event["message"], (code, event)
    assert len(client.events("error")) == len(cases)  # one error per fault, never one per frame


async def test_too_many_sessions_close_with_1013(gateway: ServerProcess) -> None:
    config = await asyncio.to_thread(httpx.get, f"{gateway.url}/config", timeout=10)
    limit = config.json()["config"]["MAX_VOICE_SESSIONS"]
    clients = [await VoiceClient.connect(gateway.ws_url) for _ in range(limit)]
    try:
        async with websockets.connect(f"{gateway.ws_url}/voice") as extra:
            refused = json.loads(await asyncio.wait_for(extra.recv(), 10))
            assert refused["type"] == "error" and refused["code"] == "too_many_sessions"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(extra.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert "too many" in closed.value.rcvd.reason
    finally:
        for c in clients:
            await c.close()
    # A slot frees as soon as a client leaves.
    await asyncio.sleep(0.2)
    again = await VoiceClient.connect(gateway.ws_url)
    await again.close()


async def test_disconnect_mid_reply_leaves_nothing_behind(gateway: ServerProcess) -> None:
    client = await VoiceClient.connect(gateway.ws_url, turn_detection=None, max_response_tokens=60)
    await client.stream(await aspoken(gateway.url, STORY))
    await client.send("audio.commit")
    await client.wait_audio(RATE * 2 // 4)
    await client.close()  # mid-reply
    await asyncio.sleep(0.5)
    assert await _metric(gateway.url, "voice_gateway_active_streams", {"kind": "voice"}) == 0
    assert (await _metric(gateway.url, "voice_gateway_tokens_per_second", {"engine": "embedded"}) or 0) > 0
    first_audio = await _metric(
        gateway.url,
        "voice_gateway_audio_generation_latency_seconds_count",
        {"engine": "embedded", "kind": "first_audio"},
    )
    assert first_audio and first_audio >= 1
    # A new connection starts from a blank page: no history to recall.
    fresh = await VoiceClient.connect(gateway.ws_url, turn_detection=None, max_response_tokens=8)
    try:
        done = await _ask(fresh, gateway.url, QUESTION)
    finally:
        await fresh.close()
    assert done["status"] == "completed"
