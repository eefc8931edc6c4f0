"""WS /read/stream against the real server (embedded engine): real sockets, real audio, real metrics."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from gateway.audio.pcm import read_wav, wav_bytes
from gateway.audio.text import split_sentences
from tests.support import ServerProcess, wer

WAIT_S = 60  # a bound for a loaded machine; never reached when things work

SHORT_TEXT = (
    "Dr. Smith reads the first chapter aloud. The second sentence costs 3.5 dollars! "
    "Does the third one end with a question?"
)
LONG_TEXT = " ".join(
    f"Paragraph {n} describes how a careful reader keeps the listener's place in a long article."
    for n in range(1, 41)
)
# Long enough that a pause lands mid-stream and synthesis must stop before the end (a minute of audio).
PAUSE_TEXT = " ".join(split_sentences(LONG_TEXT)[n].text for n in range(12))


class Client:
    """A /read/stream connection that records every event and all audio in arrival order."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.pcm = bytearray()
        self.log: list[dict[str, Any] | int] = []  # events, and the byte count of each binary frame

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": type_, **fields}))

    async def next(self) -> dict[str, Any] | bytes:
        async with asyncio.timeout(WAIT_S):
            message = await self.ws.recv()
        if isinstance(message, bytes):
            self.pcm += message
            self.log.append(len(message))
            return message
        event = json.loads(message)
        self.log.append(event)
        return event

    async def until(self, *types: str) -> dict[str, Any]:
        """Read (recording audio) up to the next event of one of `types`."""
        while True:
            item = await self.next()
            if isinstance(item, dict) and item["type"] in types:
                return item

    async def first_audio(self) -> None:
        while not isinstance(await self.next(), bytes):
            pass

    async def event(self) -> dict[str, Any]:
        item = await self.next()
        assert isinstance(item, dict), "expected an event, got audio"
        return item

    async def error(self, raw: str | bytes) -> str:
        await self.ws.send(raw)
        event = await self.event()
        assert event["type"] == "error" and event["message"], event
        return str(event["code"])

    def events(self, type_: str) -> list[dict[str, Any]]:
        return [e for e in self.log if isinstance(e, dict) and e["type"] == type_]


async def connect(server: ServerProcess) -> Client:
    return Client(await websockets.connect(server.ws_url + "/read/stream", max_size=None))


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled series nothing has touched yet (the client omits those)."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def active_streams(server: ServerProcess) -> float:
    return metric(server, "voice_gateway_active_streams", kind="read_stream")


def sentences_synthesized(server: ServerProcess) -> float:
    return metric(
        server, "voice_gateway_audio_generation_latency_seconds_count", engine="embedded", kind="sentence"
    )


async def settle(server: ServerProcess) -> None:
    """Wait until no read stream is open on the server (the gauge falls once its tasks have ended)."""
    value = -1.0
    try:
        async with asyncio.timeout(WAIT_S):
            while (value := await asyncio.to_thread(active_streams, server)) != 0:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"active_streams{{kind=read_stream}} stays at {value}") from None


def post_read_pcm(server: ServerProcess, text: str, **extra: Any) -> bytes:
    r = httpx.post(server.url + "/read", json={"text": text, **extra}, timeout=120)
    assert r.status_code == 200, r.text
    return read_wav(r.content).pcm


@pytest.fixture(scope="module")
def pause_reference(gateway: ServerProcess) -> bytes:
    return post_read_pcm(gateway, PAUSE_TEXT)


async def test_stream_equals_post_read_with_marks_before_each_sentence(gateway: ServerProcess) -> None:
    c = await connect(gateway)
    await c.send("start", text=SHORT_TEXT, voice="default", language="en")
    started = await c.event()
    assert started["type"] == "started" and started["stream_id"]
    assert (started["sample_rate"], started["encoding"], started["channels"]) == (24000, "pcm_s16le", 1)
    done = await c.until("complete", "error")
    assert done["type"] == "complete" and done["stream_id"] == started["stream_id"]

    assert bytes(c.pcm) == await asyncio.to_thread(post_read_pcm, gateway, SHORT_TEXT)
    assert done["samples_sent"] * 2 == len(c.pcm)
    assert done["duration"] == pytest.approx(len(c.pcm) / 2 / 24000)
    assert all(0 < n <= 1920 and n % 2 == 0 for n in c.log if isinstance(n, int))  # 40 ms frames

    # One mark per sentence, before its first frame, naming its span of the text and its first sample.
    spans = split_sentences(SHORT_TEXT)
    marks = c.events("mark")
    assert [(m["index"], m["char_start"], m["char_end"]) for m in marks] == [
        (i, s.start, s.end) for i, s in enumerate(spans)
    ]
    assert (
        SHORT_TEXT[marks[0]["char_start"] : marks[0]["char_end"]]
        == "Dr. Smith reads the first chapter aloud."
    )
    received = 0
    for item in c.log:
        if isinstance(item, int):
            received += item
        elif item["type"] == "mark":
            assert item["sample_offset"] * 2 == received
            assert isinstance(c.log[c.log.index(item) + 1], int), "audio follows its mark"
    assert done["sentences"] == len(spans)

    # The audio says the text.
    async with httpx.AsyncClient(base_url=gateway.url, timeout=120) as http:
        r = await http.post(
            "/voice/transcribe",
            files={"audio": ("s.wav", wav_bytes(bytes(c.pcm), 24000), "audio/wav")},
            data={"language": "en"},
        )
    assert wer(SHORT_TEXT, r.json()["text"]) <= 0.25, r.json()["text"]

    # A new start right after `complete` is a new stream, not `busy`.
    await c.send("start", text="And again.")
    assert (await c.event())["type"] == "started"
    assert (await c.until("complete", "error"))["type"] == "complete"
    await c.ws.close()


async def test_paused_and_resumed_stream_is_byte_identical_and_synthesis_waits(
    gateway: ServerProcess, pause_reference: bytes
) -> None:
    c = await connect(gateway)
    await c.send("start", text=PAUSE_TEXT)
    await c.first_audio()
    await c.send("pause")
    paused = await c.until("paused")
    assert paused["samples_sent"] * 2 == len(c.pcm), "paused names the exact sample position held"
    await c.send("ping")
    assert await c.event() == {"type": "pong", "state": "paused"}  # nothing was sent in between

    # While paused, synthesis stops a bounded amount of audio ahead: the sentence count freezes.
    async with asyncio.timeout(WAIT_S):
        before = await asyncio.to_thread(sentences_synthesized, gateway)
        while True:
            await asyncio.sleep(0.5)
            now = await asyncio.to_thread(sentences_synthesized, gateway)
            if now == before:
                break
            before = now
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await c.ws.recv()

    await c.send("resume")
    resumed = await c.event()
    assert resumed["type"] == "resumed" and resumed["samples_sent"] == paused["samples_sent"]
    done = await c.until("complete", "error")
    assert done["type"] == "complete" and done["sentences"] == len(split_sentences(PAUSE_TEXT))
    assert bytes(c.pcm) == pause_reference
    await c.ws.close()


async def test_cancel_stops_synthesis_and_a_new_start_works(gateway: ServerProcess) -> None:
    await settle(gateway)
    c = await connect(gateway)
    total_before = await asyncio.to_thread(sentences_synthesized, gateway)
    await c.send("start", text=LONG_TEXT)
    started = await c.event()
    await c.first_audio()
    await c.send("cancel")
    cancelled = await c.until("cancelled")
    assert cancelled["stream_id"] == started["stream_id"]
    assert cancelled["samples_sent"] * 2 == len(c.pcm)
    assert await asyncio.to_thread(active_streams, gateway) == 0

    done_at_cancel = await asyncio.to_thread(sentences_synthesized, gateway)
    assert done_at_cancel - total_before < len(split_sentences(LONG_TEXT)) / 2
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(sentences_synthesized, gateway) == done_at_cancel, "no work after cancel"
    await c.send("ping")
    assert await c.event() == {"type": "pong", "state": "idle"}, "no audio after cancelled"

    heard = len(c.pcm)
    await c.send("start", text="A new story begins.")
    again = await c.event()
    assert again["type"] == "started" and again["stream_id"] != started["stream_id"]
    done = await c.until("complete")
    assert done["samples_sent"] * 2 == len(c.pcm) - heard > 24000 // 2
    assert await c.error('{"type":"cancel"}') == "not_streaming"
    await c.ws.close()


async def test_errors_answer_with_stable_codes_and_the_connection_stays_usable(
    gateway: ServerProcess,
) -> None:
    c = await connect(gateway)
    assert await c.error("this is not json") == "invalid_json"
    assert await c.error("[1, 2]") == "invalid_message"
    assert await c.error('{"text": "no type"}') == "invalid_message"
    assert await c.error('{"type": "dance"}') == "unknown_type"
    assert await c.error(b"\x00\x01") == "binary_not_allowed"
    for control in ("pause", "resume", "cancel"):
        assert await c.error(json.dumps({"type": control})) == "not_streaming"

    def start(**fields: Any) -> str:
        return json.dumps({"type": "start", **fields})

    assert await c.error(start()) == "missing_text"
    assert await c.error(start(text="")) == "empty_text"
    assert await c.error(start(text="   \n ")) == "empty_text"
    assert await c.error(start(text=42)) == "invalid_text"
    assert await c.error(start(text="a" * 50_001)) == "text_too_long"
    assert await c.error(start(text="... !!!")) == "nothing_to_say"
    assert await c.error(start(text="Hello.", voice="nobody")) == "unknown_voice"
    assert await c.error(start(text="Hello.", voice="")) == "invalid_voice"
    assert await c.error(start(text="Hello.", language="xx")) == "unsupported_language"
    for speed in (0, 10, "fast", True, float("nan")):
        assert await c.error(start(text="Hello.", speed=speed)) == "invalid_speed"

    await c.send("ping", id=7)
    assert await c.event() == {"type": "pong", "state": "idle", "id": 7}

    # A second start while one streams is refused, and the first stream goes on.
    await c.send("start", text=LONG_TEXT)
    started = await c.event()
    await c.first_audio()
    await c.ws.send(start(text="Interrupting."))
    busy = await c.until("error")
    assert busy["code"] == "busy" and busy["stream_id"] == started["stream_id"]
    await c.first_audio()  # still streaming
    await c.send("cancel")
    await c.until("cancelled")

    await c.send("start", text="Still usable.", speed=1.5)
    assert (await c.event())["speed"] == 1.5
    assert (await c.until("complete", "error"))["type"] == "complete"
    await c.ws.close()


async def test_client_disconnect_mid_stream_frees_the_stream(gateway: ServerProcess) -> None:
    await settle(gateway)
    c = await connect(gateway)
    await c.send("start", text=LONG_TEXT)
    await c.first_audio()
    assert await asyncio.to_thread(active_streams, gateway) == 1
    c.ws.transport.abort()  # vanish without a close handshake

    await settle(gateway)  # the gauge falls only after the stream's tasks have ended
    frozen = await asyncio.to_thread(sentences_synthesized, gateway)
    await asyncio.sleep(1.0)
    assert await asyncio.to_thread(sentences_synthesized, gateway) == frozen, "synthesis stopped"

    # The server is healthy and streams to the next client.
    c2 = await connect(gateway)
    await c2.send("start", text="After the disconnect.")
    assert (await c2.until("complete", "error"))["type"] == "complete"
    await c2.ws.close()


async def test_two_concurrent_streams_both_complete_identically(gateway: ServerProcess) -> None:
    await settle(gateway)
    a, b = await connect(gateway), await connect(gateway)
    for c in (a, b):
        await c.send("start", text=SHORT_TEXT)
        await c.send("pause")  # hold both open so the gauge can be read
    for c in (a, b):
        await c.until("paused")
    assert await asyncio.to_thread(active_streams, gateway) == 2
    for c in (a, b):
        await c.send("resume")
    done = await asyncio.gather(a.until("complete", "error"), b.until("complete", "error"))
    assert [d["type"] for d in done] == ["complete", "complete"]
    assert done[0]["stream_id"] != done[1]["stream_id"]
    assert bytes(a.pcm) == bytes(b.pcm) and len(a.pcm) > 24000 * 2
    await settle(gateway)
    for c in (a, b):
        await c.ws.close()
