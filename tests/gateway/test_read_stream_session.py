"""The /read/stream state machine in-process, with the real Piper engine and an in-memory transport.

What a socket test cannot show precisely is checked here: how far synthesis runs ahead of a client that
does not read (backpressure), and that no task of a stream outlives it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from gateway.audio.text import split_sentences
from gateway.engines.base import SynthesisChunk, SynthesisRequest
from gateway.engines.embedded.piper_tts import PiperSynthesizer
from gateway.metrics import Metrics
from gateway.services.speech import stream_speech
from gateway.sessions.read_stream import ReadStreamSession, SynthesisScheduler

RATE = 24000
WAIT_S = 30  # a generous bound for a loaded machine; never reached when it works
LONG_TEXT = " ".join(
    f"Paragraph {n} explains how the reader keeps its place while the listener pauses and resumes."
    for n in range(1, 13)
)


class Recorder:
    """A transport that keeps what it is sent; `gate` lets a test play a client that stops reading."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.pcm = bytearray()
        self.frames = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False
        self.changed = asyncio.Event()
        self.on_event: Any = None  # called with each event as it is sent, inside the session's own task

    async def send_json(self, data: Any) -> None:
        if self.fail:
            raise ConnectionResetError("client gone")
        if self.on_event is not None:
            self.on_event(data)
        self.events.append(json.loads(json.dumps(data)))
        self.changed.set()

    async def send_text(self, data: str) -> None:  # the session sends its events as JSON text
        await self.send_json(json.loads(data))

    async def send_bytes(self, data: bytes) -> None:
        await self.gate.wait()
        if self.fail:
            raise ConnectionResetError("client gone")
        self.pcm += data
        self.frames += 1
        self.changed.set()

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_for(self, event_type: str) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while True:
                for e in self.events:
                    if e["type"] == event_type:
                        return e
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture(scope="module")
def synth() -> Iterator[PiperSynthesizer]:
    executor = ThreadPoolExecutor(max_workers=2)
    engine = PiperSynthesizer(RATE, executor)
    asyncio.run(engine.start())
    yield engine
    executor.shutdown(wait=True)


async def reference_chunks(synth: PiperSynthesizer, text: str) -> list[SynthesisChunk]:
    """What POST /read synthesizes for the text (the same service path: normalization included)."""
    return [c async for c in stream_speech(synth, synth.resolve(SynthesisRequest(text=text)))]


async def reference_pcm(synth: PiperSynthesizer, text: str) -> bytes:
    return b"".join(c.pcm for c in await reference_chunks(synth, text))


def stream_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("read-stream-")]


async def until(predicate: Any) -> None:
    async with asyncio.timeout(WAIT_S):
        while not predicate():  # noqa: ASYNC110 - the session's internals have no event to wait on
            await asyncio.sleep(0.01)


async def test_a_client_that_does_not_read_holds_bounded_audio_and_no_further_synthesis(
    synth: PiperSynthesizer,
) -> None:
    metrics = Metrics()
    rec = Recorder()
    rec.gate.clear()  # the client accepts nothing
    session = ReadStreamSession(synth, rec, metrics=metrics, max_ahead_s=2.0)
    await session.receive_text(json.dumps({"type": "start", "text": LONG_TEXT}))
    s = session.stream
    assert s is not None
    await until(lambda: s.buffer.waiting_for_room)

    spans = split_sentences(LONG_TEXT)
    chunks = await reference_chunks(synth, LONG_TEXT)
    # Two seconds of audio ahead plus at most the one sentence that crossed the limit.
    assert s.buffer.limit <= s.buffer.pending <= s.buffer.limit + max(len(c.pcm) // 2 for c in chunks)
    assert 1 <= s.sentences_synthesized < len(spans) // 2
    held = s.sentences_synthesized
    await asyncio.sleep(0.3)
    assert s.sentences_synthesized == held, "synthesis must wait for the client"

    rec.gate.set()  # the client reads again: the stream runs to the end, byte for byte
    done = await rec.wait_for("complete")
    assert done["sentences"] == len(spans)
    assert bytes(rec.pcm) == b"".join(c.pcm for c in chunks)
    assert done["samples_sent"] * 2 == len(rec.pcm)
    # A client may start again the moment `complete` arrives, before the old stream has tidied up.
    await session.receive_text(json.dumps({"type": "start", "text": "Once more."}))
    assert rec.events[-1]["type"] == "started"
    await until(lambda: rec.types().count("complete") == 2)
    await until(lambda: metrics.active_streams.labels(kind="read_stream")._value.get() == 0)
    assert not stream_tasks()
    await session.aclose()


async def test_pause_holds_the_exact_sample_and_resume_continues_from_it(synth: PiperSynthesizer) -> None:
    metrics = Metrics()
    rec = Recorder()
    session = ReadStreamSession(synth, rec, metrics=metrics, max_ahead_s=2.0)
    text = " ".join(span.text for span in split_sentences(LONG_TEXT)[:6])
    await session.receive_text(json.dumps({"type": "start", "text": text}))
    await until(lambda: rec.frames >= 3)
    await session.receive_text('{"type":"pause"}')
    paused = await rec.wait_for("paused")
    held = len(rec.pcm)
    assert paused["samples_sent"] * 2 == held
    assert session.state == "paused"
    await asyncio.sleep(0.3)
    assert len(rec.pcm) == held and rec.types()[-1] == "paused"

    await session.receive_text('{"type":"pause"}')  # idempotent: the same position again
    assert rec.events[-1]["type"] == "paused" and rec.events[-1]["samples_sent"] == paused["samples_sent"]
    await session.receive_text('{"type":"resume"}')
    await rec.wait_for("complete")
    assert bytes(rec.pcm) == await reference_pcm(synth, text)
    types = rec.types()
    assert types.index("resumed") < types.index("complete")
    # The client leaves the moment `complete` arrives, while the stream is still tidying up.
    await session.aclose()
    assert metrics.active_streams.labels(kind="read_stream")._value.get() == 0 and not stream_tasks()


async def test_cancel_and_disconnect_leave_no_task_and_the_gauge_at_zero(synth: PiperSynthesizer) -> None:
    metrics = Metrics()
    gauge = metrics.active_streams.labels(kind="read_stream")
    rec = Recorder()
    session = ReadStreamSession(synth, rec, metrics=metrics)
    await session.receive_text(json.dumps({"type": "start", "text": LONG_TEXT}))
    await until(lambda: rec.frames >= 1)
    assert gauge._value.get() == 1 and len(stream_tasks()) == 2  # sender + synthesis
    await session.receive_text('{"type":"cancel"}')
    cancelled = rec.events[-1]
    assert cancelled["type"] == "cancelled" and cancelled["samples_sent"] * 2 == len(rec.pcm)
    assert session.state == "idle" and gauge._value.get() == 0 and not stream_tasks()

    # The same session starts again; then the client vanishes mid-stream.
    await session.receive_text(json.dumps({"type": "start", "text": LONG_TEXT}))
    await until(lambda: rec.frames >= 5)
    rec.fail = True
    await until(lambda: session.stream is None)
    assert gauge._value.get() == 0 and not stream_tasks()
    await session.aclose()


async def test_an_engine_failure_mid_stream_is_an_error_event_and_the_session_stays_usable() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    engine = PiperSynthesizer(RATE, executor)
    await engine.start()
    rec = Recorder()
    rec.gate.clear()
    session = ReadStreamSession(engine, rec, max_ahead_s=1.0)
    # The state a `ping` would report the instant the error goes out, before the stream's task has
    # released the engine call: the error is the stream's last word, so it is already idle (CI once saw
    # "streaming" there against the real vLLM-Omni, whose stream takes a while to close).
    state_at_error: list[str] = []
    rec.on_event = lambda e: state_at_error.append(session.state) if e["type"] == "error" else None
    await session.receive_text(json.dumps({"type": "start", "text": LONG_TEXT}))
    s = session.stream
    assert s is not None
    await until(lambda: s.buffer.waiting_for_room)
    await engine.aclose()  # the model goes away under a running stream
    rec.gate.set()
    err = await rec.wait_for("error")
    assert err["code"] == "engine_unavailable" and err["stream_id"] == s.id
    assert state_at_error == ["idle"]
    assert "complete" not in rec.types()
    await until(lambda: session.stream is None)
    await session.receive_text('{"type":"ping"}')
    assert rec.events[-1] == {"type": "pong", "state": "idle"}
    await session.aclose()
    executor.shutdown(wait=True)


async def test_scheduler_admits_the_earliest_deadline_first_and_skips_cancelled_waiters() -> None:
    scheduler = SynthesisScheduler(slots=1)
    order: list[str] = []
    hold = asyncio.Event()

    async def job(name: str, deadline: float, wait: asyncio.Event | None = None) -> None:
        async with scheduler.slot(deadline):
            order.append(name)
            if wait is not None:
                await wait.wait()

    first = asyncio.create_task(job("first", 9.0, hold))
    await until(lambda: order == ["first"])
    waiters = {
        name: asyncio.create_task(job(name, deadline))
        for name, deadline in (("late", 3.0), ("early", 1.0), ("gone", 0.5), ("middle", 2.0))
    }
    await until(lambda: scheduler.waiting == 4)
    waiters["gone"].cancel()  # a stream cancelled while it waited for the CPU
    hold.set()
    await asyncio.wait([first, *waiters.values()])
    assert order == ["first", "early", "middle", "late"]
    assert scheduler.busy == 0 and scheduler.waiting == 0


async def test_streams_through_a_scheduler_are_unchanged_and_release_every_slot(
    synth: PiperSynthesizer,
) -> None:
    scheduler = SynthesisScheduler(slots=1)
    recorders = [Recorder(), Recorder()]
    sessions = [ReadStreamSession(synth, rec, scheduler=scheduler) for rec in recorders]
    text = " ".join(span.text for span in split_sentences(LONG_TEXT)[:3])
    for session in sessions:
        await session.receive_text(json.dumps({"type": "start", "text": text}))
    await recorders[0].wait_for("complete")
    await recorders[1].wait_for("complete")
    reference = await reference_pcm(synth, text)
    assert bytes(recorders[0].pcm) == bytes(recorders[1].pcm) == reference
    assert scheduler.busy == 0 and scheduler.waiting == 0
    for session in sessions:
        await session.aclose()


async def test_a_client_leaving_right_after_start_leaves_nothing_behind(synth: PiperSynthesizer) -> None:
    metrics = Metrics()
    session = ReadStreamSession(synth, Recorder(), metrics=metrics, scheduler=SynthesisScheduler(1))
    await session.receive_text(json.dumps({"type": "start", "text": LONG_TEXT, "format": "opus"}))
    await session.aclose()  # before the stream's task has run a single step
    assert session.stream is None and not stream_tasks()
    assert metrics.active_streams.labels(kind="read_stream")._value.get() == 0
