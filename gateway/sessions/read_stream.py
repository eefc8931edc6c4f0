"""The `/read/stream` protocol as a state machine that needs no server: it talks to a `Transport`.

Pipeline per stream:

    engine.stream()  ->  producer task  ->  AheadBuffer  ->  sender (in _run)  ->  transport
    (a chunk per         (asks for the       (bounded:        (marks + small
     sentence, or        next chunk only     backpressure)    frames, pause gate)
     pieces of one)      when there is room)

Everything that leaves for the client goes through one lock, so control replies (`paused`, `cancelled`,
...) are ordered exactly against the audio: after `paused` no frame is sent until `resumed`, and
`paused.samples_sent` is the exact sample position the stream holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import math
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gateway.audio.stream_encode import StreamEncoder
from gateway.engines.base import ModelState, SynthesisChunk, SynthesisRequest, Synthesizer
from gateway.errors import (
    APIError,
    GatewayError,
    bad_request,
    engine_unavailable,
    error_event,
    internal_error,
)
from gateway.metrics import Metrics
from gateway.services.speech import check_text, resolve, stream_speech
from gateway.sessions.connection import ConnectionGone, Transport, WebSocketConnection

log = logging.getLogger(__name__)

FRAME_MS = 40  # 1920 bytes at 24 kHz: pause takes effect within one frame
MAX_AHEAD_S = 10.0  # audio synthesized but not yet accepted by the socket, per stream
ENCODING = "pcm_s16le"
CHANNELS = 1
GAUGE_KIND = "read_stream"


# -- framing and marks: the one place that turns a synthesized chunk into what the client receives -------


@dataclass(frozen=True)
class Frame:
    data: bytes
    samples: int


class PcmFramer:
    """Slices s16le PCM into fixed-length frames. An encoder (e.g. Opus) would offer the same two methods
    and keep its state between calls; `flush` then emits what it still holds at the end of the stream."""

    encoding = ENCODING

    def __init__(self, sample_rate: int, frame_ms: int = FRAME_MS) -> None:
        self.frame_samples = max(1, sample_rate * frame_ms // 1000)

    def frames(self, pcm: bytes) -> Iterator[Frame]:
        step = self.frame_samples * 2
        for i in range(0, len(pcm), step):
            data = pcm[i : i + step]
            yield Frame(data, len(data) // 2)

    def flush(self) -> Iterator[Frame]:
        return iter(())

    def close(self) -> None:
        pass


class OggOpusFramer(PcmFramer):
    """Ogg Opus for clients on slow networks: the binary messages, concatenated, are one Ogg Opus file.
    `Frame.samples` counts the PCM samples that went into the encoder with it, so positions stay in samples
    at `sample_rate`; the encoder keeps one Opus packet (20 ms) plus its 6.5 ms look-ahead until the next
    frame or the end (`flush`)."""

    encoding = "ogg_opus"

    def __init__(self, sample_rate: int, frame_ms: int = FRAME_MS) -> None:
        super().__init__(sample_rate, frame_ms)
        # One Ogg page per Opus packet: bytes leave with the frame that produced them.
        # Thread-safe: frames are encoded in a worker thread, a cancelled stream closes it from the loop.
        self._encoder = StreamEncoder("opus", sample_rate, page_ms=20)

    def frames(self, pcm: bytes) -> Iterator[Frame]:
        for frame in super().frames(pcm):
            yield Frame(self._encoder.write(frame.data), frame.samples)

    def flush(self) -> Iterator[Frame]:
        tail = self._encoder.finish()
        return iter((Frame(tail, 0),) if tail else ())

    def close(self) -> None:
        self._encoder.close()


FRAMERS: dict[str, type[PcmFramer]] = {"pcm": PcmFramer, "opus": OggOpusFramer}


@dataclass(frozen=True)
class Mark:
    """A point in the audio tied to a span of the original text. `offset`: samples into the chunk."""

    kind: str  # "sentence" | "word"
    index: int
    char_start: int
    char_end: int
    offset: int = 0
    end_offset: int | None = None  # words: where the word ends, samples into the chunk
    text: str = ""  # words: the word as written in the original text
    spoken: str = ""  # words: what was said for it, when normalization rewrote it ("$5" -> "five dollars")


def chunk_marks(chunk: SynthesisChunk) -> list[Mark]:
    marks = [Mark("sentence", chunk.index, chunk.text_start, chunk.text_end, 0)]
    rate = chunk.sample_rate
    total = len(chunk.pcm) // 2
    for i, w in enumerate(chunk.words):
        start, end = min(total, round(w.start * rate)), min(total, round(w.end * rate))
        marks.append(Mark("word", i, w.text_start, w.text_end, start, end, w.text, w.spoken))
    return marks


def render(
    chunk: SynthesisChunk, framer: PcmFramer, stream_id: str, base_sample: int, marks_too: bool = True
) -> Iterator[dict[str, Any] | Frame]:
    """Marks and frames of one chunk, in order: each mark goes out right before the frame holding its
    first sample, and names its exact sample position so a client that buffers can schedule it. A later
    piece of a sentence (`marks_too` False) has no marks: its sentence's went out with the first piece."""
    marks = deque(sorted(chunk_marks(chunk), key=lambda m: m.offset) if marks_too else ())
    position = 0
    for frame in framer.frames(chunk.pcm):
        while marks and marks[0].offset < position + frame.samples:
            yield _mark_event(marks.popleft(), stream_id, base_sample)
        yield frame
        position += frame.samples
    for mark in marks:  # a chunk without audio still tells the reader where the text went
        yield _mark_event(mark, stream_id, base_sample)


def _mark_event(mark: Mark, stream_id: str, base_sample: int) -> dict[str, Any]:
    event = {
        "type": "mark",
        "stream_id": stream_id,
        "kind": mark.kind,
        "index": mark.index,
        "char_start": mark.char_start,
        "char_end": mark.char_end,
        "sample_offset": base_sample + mark.offset,
    }
    if mark.kind == "word":
        event["word"] = mark.text
        event["sample_end"] = base_sample + (mark.end_offset if mark.end_offset is not None else mark.offset)
        if mark.spoken:
            event["spoken"] = mark.spoken
    return event


# -- the bounded buffer between synthesis and the socket ------------------------------------------------


@dataclass(frozen=True)
class _End:
    pass


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class AheadBuffer:
    """Synthesized chunks the socket has not accepted yet. The producer waits for room *before* asking
    the engine for the next chunk, so a slow or paused client holds at most `limit` samples plus one
    sentence, and no CPU is spent far ahead of the listener."""

    def __init__(self, limit_samples: int) -> None:
        self.limit = limit_samples
        self.pending = 0  # samples put and not yet released
        self.waiting_for_room = False
        self._items: deque[SynthesisChunk | _End | _Failed] = deque()
        self._cond = asyncio.Condition()

    async def wait_for_room(self) -> None:
        async with self._cond:
            self.waiting_for_room = True
            try:
                await self._cond.wait_for(lambda: self.pending < self.limit)
            finally:
                self.waiting_for_room = False

    async def put(self, item: SynthesisChunk | _End | _Failed) -> None:
        async with self._cond:
            self._items.append(item)
            if isinstance(item, SynthesisChunk):
                self.pending += len(item.pcm) // 2
            self._cond.notify_all()

    async def get(self) -> SynthesisChunk | _End | _Failed:
        async with self._cond:
            await self._cond.wait_for(lambda: bool(self._items))
            return self._items.popleft()

    async def release(self, samples: int) -> None:
        async with self._cond:
            self.pending -= samples
            self._cond.notify_all()


# -- sharing the CPU between streams -------------------------------------------------------------------


class SynthesisScheduler:
    """Admits sentence syntheses of all read streams, `slots` at a time, earliest deadline first.

    A stream's deadline is the moment its listener runs out of audio: playback is assumed to start with its
    first frame and to run in real time except while paused. A new stream is due at once, so it speaks
    within about one sentence even while other streams read long texts; a stream already far ahead waits
    for the ones about to run dry. Without it, sentences queue in arrival order and a newcomer waits behind
    one sentence of every running stream.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self.busy = 0
        self._waiting: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for _, _, f in self._waiting if not f.done())

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        if self.busy < self.slots and not self.waiting:
            self.busy += 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (deadline, next(self._order), future))
            try:
                await future  # a finishing synthesis hands its slot over: `busy` stays as it is
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # the slot reached us as we were cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():  # cancelled waiters stay in the heap until they surface here
                future.set_result(None)
                return
        self.busy -= 1


# -- the session ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class ActiveStream:
    id: str
    request: SynthesisRequest
    buffer: AheadBuffer
    framer: PcmFramer
    playing: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while paused
    task: asyncio.Task[None] | None = None
    samples_sent: int = 0
    sentences_synthesized: int = 0
    samples_synthesized: int = 0
    created_at: float = 0.0  # loop time
    playing_since: float | None = None  # loop time of the first frame: the listener's playback clock
    paused_at: float | None = None
    paused_total: float = 0.0
    finishing: bool = False  # `complete` is on its way: too late to pause or cancel
    closing: bool = False  # the sender has stopped and is releasing the stream

    @property
    def paused(self) -> bool:
        return not self.playing.is_set()


class ReadStreamSession(WebSocketConnection):
    """One WebSocket connection: at most one stream at a time, controls answered at once. Its sends raise
    ConnectionGone, which ends a stream's task; the active-streams gauge counts streams, not connections."""

    def __init__(
        self,
        synth: Synthesizer,
        transport: Transport,
        *,
        metrics: Metrics | None = None,
        max_text_chars: int = 50_000,
        min_speed: float = 0.25,
        max_speed: float = 4.0,
        frame_ms: int = FRAME_MS,
        max_ahead_s: float = MAX_AHEAD_S,
        scheduler: SynthesisScheduler | None = None,
    ) -> None:
        super().__init__(transport, metrics)
        self._synth = synth
        self._max_text_chars = max_text_chars
        self._min_speed = min_speed
        self._max_speed = max_speed
        self._frame_ms = frame_ms
        self._ahead_samples = max(1, int(max_ahead_s * synth.sample_rate))
        self._scheduler = scheduler
        self.stream: ActiveStream | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "start": self._on_start,
            "pause": self._on_pause,
            "resume": self._on_resume,
            "cancel": self._on_cancel,
            "ping": self._on_ping,
        }

    @property
    def state(self) -> str:
        # A stream that has said its last word (`complete` or an error) is idle for the client even while
        # its task is still releasing the backend call: a `start` is accepted at once.
        s = self._controllable()
        if s is None:
            return "idle"
        return "paused" if s.paused else "streaming"

    # -- input -----------------------------------------------------------------------------------
    async def receive_text(self, raw: str) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: deeply nested arrays (bench/fuzz_ws.py)
            await self._error(bad_request("invalid_json", "the message is not valid JSON"))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self._error(bad_request("invalid_message", 'a message is a JSON object with a "type"'))
            return
        handler = self._handlers.get(message["type"])
        if handler is None:
            known = ", ".join(self._handlers)
            await self._error(
                bad_request("unknown_type", f"unknown message type {message['type']!r}; known: {known}")
            )
            return
        await handler(message)

    async def receive_bytes(self, data: bytes) -> None:
        await self._error(
            bad_request("binary_not_allowed", "this endpoint takes JSON text messages only; audio flows out")
        )

    async def aclose(self) -> None:
        """The connection is gone: stop synthesis and sending, release everything."""
        self.gone = True
        s = self.stream
        if s is not None:
            await self._stop(s)

    # -- handlers --------------------------------------------------------------------------------
    async def _on_start(self, message: dict[str, Any]) -> None:
        current = self.stream
        if current is not None:
            if not (current.finishing or current.closing):
                await self._error(
                    APIError(
                        409, "busy", "a stream is already running; cancel it first", stream_id=current.id
                    )
                )
                return
            # It has said its last word (`complete` or an error): a client may start at once.
            await self._stop(current)
        try:
            request = self._parse_start(message)
            framer = self._parse_format(message)
        except GatewayError as err:
            await self._error(err)
            return
        s = ActiveStream(
            id=uuid.uuid4().hex[:16], request=request, buffer=AheadBuffer(self._ahead_samples), framer=framer
        )
        s.playing.set()
        s.created_at = asyncio.get_running_loop().time()
        self.stream = s
        await self.send_message(
            {
                "type": "started",
                "stream_id": s.id,
                "sample_rate": self._synth.sample_rate,
                "encoding": s.framer.encoding,
                "channels": CHANNELS,
                "frame_samples": s.framer.frame_samples,
                "voice": request.voice,
                "language": request.language,
                "speed": request.speed,
            }
        )
        s.task = asyncio.create_task(self._run(s), name=f"read-stream-{s.id}")

    def _parse_start(self, message: dict[str, Any]) -> SynthesisRequest:
        text = message.get("text")
        if text is None:
            raise bad_request("missing_text", 'start needs a "text" field')
        if not isinstance(text, str):
            raise bad_request("invalid_text", "text must be a string")
        text = check_text(text, self._max_text_chars)
        if not any(ch.isalnum() for ch in text):
            raise bad_request("nothing_to_say", "the text holds nothing that can be spoken")
        voice = message.get("voice")
        voice = "default" if voice is None else voice
        if not isinstance(voice, str) or not voice.strip() or len(voice) > 64:
            raise bad_request("invalid_voice", "voice must be a non-empty string of at most 64 characters")
        language = message.get("language")
        language = "en" if language is None else language
        if not isinstance(language, str) or not language.strip() or len(language) > 32:
            raise bad_request(
                "invalid_language", "language must be a non-empty string of at most 32 characters"
            )
        speed = message.get("speed")
        speed = 1.0 if speed is None else speed
        if (
            isinstance(speed, bool)
            or not isinstance(speed, int | float)
            or not math.isfinite(speed)
            or not self._min_speed <= speed <= self._max_speed
        ):
            raise bad_request(
                "invalid_speed", f"speed must be a number from {self._min_speed} to {self._max_speed}"
            )
        flags = {}
        for name in ("normalize", "word_marks"):
            value = message.get(name)
            if value is not None and not isinstance(value, bool):
                raise bad_request(f"invalid_{name}", f"{name} must be true or false")
            flags[name] = value
        if self._synth.state is not ModelState.READY:
            raise engine_unavailable("tts")
        return resolve(  # its engine errors are the client's: one error tree (gateway/errors.py)
            self._synth,
            SynthesisRequest(
                text=text,
                voice=voice,
                language=language,
                speed=float(speed),
                normalize=flags["normalize"] is not False,
                timings=flags["word_marks"] is True,
            ),
        )

    def _parse_format(self, message: dict[str, Any]) -> PcmFramer:
        fmt = message.get("format")
        fmt = "pcm" if fmt is None else fmt
        if fmt not in FRAMERS:
            raise bad_request("invalid_format", "format must be one of: " + ", ".join(FRAMERS))
        return FRAMERS[fmt](self._synth.sample_rate, self._frame_ms)

    async def _on_pause(self, _: dict[str, Any]) -> None:
        s = self._controllable()
        if s is None:
            await self._error(bad_request("not_streaming", "there is no stream to pause"))
            return
        s.playing.clear()  # before taking the lock: the sender stops at its next frame
        if s.paused_at is None:
            s.paused_at = asyncio.get_running_loop().time()
        async with self.send_lock:
            await self.send_locked({"type": "paused", **self._position(s)})

    async def _on_resume(self, _: dict[str, Any]) -> None:
        s = self._controllable()
        if s is None:
            await self._error(bad_request("not_streaming", "there is no stream to resume"))
            return
        async with self.send_lock:
            # `resumed` goes out before the next frame can: the gate opens while we hold the lock.
            await self.send_locked({"type": "resumed", **self._position(s)})
            if s.paused_at is not None:
                s.paused_total += asyncio.get_running_loop().time() - s.paused_at
                s.paused_at = None
            s.playing.set()

    async def _on_cancel(self, _: dict[str, Any]) -> None:
        s = self._controllable()
        if s is None:
            await self._error(bad_request("not_streaming", "there is no stream to cancel"))
            return
        await self._stop(s)
        if s.finishing:  # it completed while we stopped it; `complete` said so already
            await self._error(bad_request("not_streaming", "the stream has already completed"))
            return
        await self.send_message({"type": "cancelled", **self._position(s)})

    async def _on_ping(self, message: dict[str, Any]) -> None:
        pong: dict[str, Any] = {"type": "pong", "state": self.state}
        if "id" in message:  # lets a client match answers and measure round trips
            pong["id"] = message["id"]
        await self.send_message(pong)

    # -- the stream --------------------------------------------------------------------------------
    async def _run(self, s: ActiveStream) -> None:
        gauge = self.metrics.active_streams.labels(kind=GAUGE_KIND) if self.metrics else None
        if gauge is not None:
            gauge.inc()
        producer = asyncio.create_task(self._produce(s), name=f"read-stream-{s.id}-synth")
        try:
            base = 0
            sentence = -1  # index of the sentence whose mark went out last
            while True:
                item = await s.buffer.get()
                if isinstance(item, _End):
                    break
                if isinstance(item, _Failed):
                    await self._gated(s, self._stream_error(s, item.error), last=True)
                    return
                # Encoding (Opus) is CPU work: a chunk's frames are made in a worker thread, then sent.
                first = item.index != sentence
                sentence = item.index
                for out in await asyncio.to_thread(list, render(item, s.framer, s.id, base, first)):
                    await self._gated(s, out)
                base += len(item.pcm) // 2
            for frame in await asyncio.to_thread(list, s.framer.flush()):
                await self._gated(s, frame)
            await self._gated(s, None)
        except ConnectionGone:
            log.debug("read stream %s: client gone", s.id)
        except Exception:  # a bug must not leave a silent, half-open stream behind
            log.exception("read stream %s failed", s.id)
            s.finishing = True
            with contextlib.suppress(ConnectionGone):
                await self.send_message(error_event(internal_error(), stream_id=s.id))
        finally:
            # A cancel arriving now (client gone right after `complete`) must not skip the bookkeeping.
            s.closing = True
            producer.cancel()
            try:
                await asyncio.wait([producer])
            finally:
                s.framer.close()
                if self.stream is s:
                    self.stream = None
                if gauge is not None:
                    gauge.dec()

    async def _produce(self, s: ActiveStream) -> None:
        try:
            async with contextlib.aclosing(stream_speech(self._synth, s.request, self.metrics)) as chunks:
                while True:
                    await s.buffer.wait_for_room()
                    if self._scheduler is None:
                        chunk = await anext(chunks, None)
                    else:
                        async with self._scheduler.slot(self._deadline(s)):
                            chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    s.sentences_synthesized += int(chunk.final)
                    s.samples_synthesized += len(chunk.pcm) // 2
                    await s.buffer.put(chunk)
            await s.buffer.put(_End())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await s.buffer.put(_Failed(exc))

    def _deadline(self, s: ActiveStream) -> float:
        """When the listener will have heard everything synthesized so far (loop time)."""
        if s.playing_since is None:
            return s.created_at  # nothing heard yet: due now, in order of arrival
        paused = s.paused_total
        if s.paused_at is not None:
            paused += asyncio.get_running_loop().time() - s.paused_at
        return s.playing_since + paused + s.samples_synthesized / self._synth.sample_rate

    async def _gated(self, s: ActiveStream, item: dict[str, Any] | Frame | None, last: bool = False) -> None:
        """Send one stream item once the stream is playing; None is the final `complete`, `last` marks
        an error that ends the stream."""
        while True:
            await s.playing.wait()
            async with self.send_lock:
                if not s.playing.is_set():
                    continue  # paused between the wait and the lock
                if item is None:
                    s.finishing = True
                    await self.send_locked(
                        {"type": "complete", **self._position(s), "sentences": s.sentences_synthesized}
                    )
                elif isinstance(item, Frame):
                    if item.data:  # an encoder may hold a frame's bytes until the next one
                        await self.send_locked(item.data)
                        if s.playing_since is None:
                            s.playing_since = asyncio.get_running_loop().time()
                    s.samples_sent += item.samples
                    await s.buffer.release(item.samples)
                else:
                    s.finishing = s.finishing or last
                    await self.send_locked(item)
                return

    def _stream_error(self, s: ActiveStream, exc: BaseException) -> dict[str, Any]:
        if isinstance(exc, GatewayError):
            err = exc
        else:
            log.error("read stream %s: synthesis failed", s.id, exc_info=exc)
            err = APIError(500, "synthesis_failed", "synthesis failed; the stream has stopped")
        return error_event(err, stream_id=s.id)

    async def _stop(self, s: ActiveStream) -> None:
        if s.task is not None:
            if not (s.closing or s.finishing):  # past that point it ends by itself within moments
                s.task.cancel()
            await asyncio.wait([s.task])  # not `await task`: its CancelledError is not ours
        if not s.closing:  # its task never ran (the client left at once): the framer is ours to close
            s.framer.close()
        if self.stream is s:
            self.stream = None

    def _controllable(self) -> ActiveStream | None:
        s = self.stream
        return None if s is None or s.finishing or s.closing else s

    def _position(self, s: ActiveStream) -> dict[str, Any]:
        return {
            "stream_id": s.id,
            "samples_sent": s.samples_sent,
            "duration": round(s.samples_sent / self._synth.sample_rate, 6),
        }

    # -- output ------------------------------------------------------------------------------------
    async def _error(self, err: GatewayError) -> None:
        await self.send_message(error_event(err))
