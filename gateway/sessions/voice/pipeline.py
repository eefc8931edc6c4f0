"""One assistant reply: responder stream -> sentences -> TTS -> paced audio, as three concurrent stages.

    generate:  responder.respond() -> text deltas (emitted) -> SentenceChunker -> sentence queue
               (or, for a responder that makes audio, its PCM straight to the audio queue)
    speak:     sentence -> Synthesizer.stream -> audio queue           (text-only replies)
    play:      audio queue -> Playout (frames, paced)                  -> AudioOut events

The pipeline alone turns text into speech: a responder emits text and, where it can, audio. When it does not
produce audio (`produces_audio` False) its text is chunked and spoken as it streams; when it was to produce
audio and a reply came without any (its usage event says `has_audio` False: a deployment without audio
output), the reply's text is chunked and spoken once it is complete. Either way the Synthesizer's word
timings come with the sentences.

The first sentence is spoken while the model is still writing the second, and a sentence's first piece of
audio is played while the engine still renders the rest of it. Cancelling `run()` stops all three at their
next await: the responder's iterator is closed (which stops generation), the TTS stream is closed, and no
further frame is sent. `spoken_text()` then maps the audio actually sent back onto the reply text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from gateway.engines.base import (
    ConversationRequest,
    Responder,
    SynthesisChunk,
    SynthesisRequest,
    Synthesizer,
)
from gateway.metrics import Metrics
from gateway.services.speech import min_speech_seconds, stream_speech
from gateway.sessions.voice.chunker import SentenceChunker, speakable
from gateway.sessions.voice.events import AudioOut, TextDelta, VoiceEvent
from gateway.sessions.voice.playout import Playout, Segment

Emit = Callable[[VoiceEvent], Awaitable[None]]

# TTS may run this many sentences ahead of playback: enough to never starve, little to throw away on
# an interrupt.
_AUDIO_AHEAD = 2


def _cut_words(text: str, fraction: float) -> str:
    words = text.split()
    keep = round(len(words) * max(0.0, min(1.0, fraction)))
    return " ".join(words[:keep])


def _heard(segment: Segment, sample_rate: int) -> str:
    """The part of a cut segment whose words were sent whole, by the TTS's own word timings; without
    timings, the words in proportion to the samples sent (of its expected length while it was still being
    synthesized)."""
    text = segment.text or ""
    if not segment.words:
        return _cut_words(text, segment.sent_samples / max(1, segment.expected_samples))
    sent_s = segment.sent_samples / sample_rate
    whole = [w for w in segment.words if w.end <= sent_s]
    if not whole:
        return ""
    # A timed word's span excludes the punctuation glued to it ("time" of "time,"); the cut goes to the
    # end of the written token, so what is kept is a prefix of the text the client was sent, word by word.
    end = whole[-1].text_end
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[:end].strip()


@dataclass
class ResponseTimings:
    """Monotonic stamps; None until reached."""

    commit: float
    asr_s: float | None = None
    llm_start: float | None = None
    first_token: float | None = None
    first_sentence: float | None = None
    first_tts_s: float | None = None
    first_audio: float | None = None
    end: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        def ms(a: float | None, b: float | None) -> float | None:
            return round((b - a) * 1000, 1) if a is not None and b is not None else None

        return {
            "asr_ms": round(self.asr_s * 1000, 1) if self.asr_s is not None else None,
            "llm_first_token_ms": ms(self.llm_start, self.first_token),
            "llm_first_sentence_ms": ms(self.llm_start, self.first_sentence),
            "tts_first_chunk_ms": round(self.first_tts_s * 1000, 1) if self.first_tts_s is not None else None,
            "first_audio_ms": ms(self.commit, self.first_audio),
            "total_ms": ms(self.commit, self.end),
        }


class ResponseRun:
    def __init__(
        self,
        *,
        response_id: str,
        responder: Responder,
        synthesizer: Synthesizer,
        request: ConversationRequest,
        emit: Emit,
        sample_rate: int,
        timings: ResponseTimings,
        lead_ms: int,
        metrics: Metrics | None = None,
        speak: bool = True,
        word_timings: bool = False,
    ) -> None:
        self.response_id = response_id
        self.speak = speak  # False: a text-only reply (Realtime output_modalities ["text"]), no audio at all
        self.word_timings = word_timings  # Segment.words from the TTS: barge-in keeps whole words
        self._responder = responder
        self._synth = synthesizer
        self._request = request
        self._emit = emit
        self._metrics = metrics
        self.timings = timings
        self.text = ""  # everything the responder wrote
        self.completion_tokens = 0
        self.tokens_per_second: float | None = None
        self._audio_generated = 0  # samples, for responders that make audio
        self._responder_audio = responder.produces_audio  # decided per reply: it may learn otherwise
        self._reply_has_audio = False  # the usage event's word on this reply
        self.playout = Playout(self._send_frame, sample_rate, lead_ms=lead_ms)
        self._sentences: asyncio.Queue[str | None] = asyncio.Queue()  # None: the reply's text has ended
        self._audio: asyncio.Queue[tuple[Segment, bytes] | None] = asyncio.Queue(maxsize=_AUDIO_AHEAD)
        self._segments = 0

    async def _send_frame(self, pcm: bytes, index: int) -> None:
        await self._emit(AudioOut(self.response_id, pcm, index))

    # -- stages --------------------------------------------------------------------------------
    async def _generate(self) -> None:
        chunker = SentenceChunker()
        t = self.timings
        t.llm_start = time.monotonic()
        stream = self._responder.respond(self._request)
        try:
            async for event in stream:
                if event.kind == "text" and event.text:
                    if t.first_token is None:
                        t.first_token = time.monotonic()
                    self.text += event.text
                    self.completion_tokens += 1  # one delta per token; the usage event corrects it
                    await self._emit(TextDelta(self.response_id, event.text))
                    if not self._responder_audio and self.speak:
                        for sentence in chunker.feed(event.text):
                            await self._queue_sentence(sentence)
                elif event.kind == "audio" and event.pcm and self.speak:
                    if t.first_token is None:
                        t.first_token = time.monotonic()
                    self._audio_generated += len(event.pcm) // 2
                    segment = Segment(self._segments, None, len(event.pcm) // 2)
                    self._segments += 1
                    await self._audio.put((segment, event.pcm))
                elif event.kind == "usage":
                    self.completion_tokens = event.completion_tokens or self.completion_tokens
                    self.tokens_per_second = event.tokens_per_second
                    self._reply_has_audio = event.has_audio
                    if self._metrics is not None and event.tokens_per_second is not None:
                        self._metrics.tokens_per_second.labels(engine=self._responder.name).set(
                            event.tokens_per_second
                        )
        finally:
            await stream.aclose()
        if self.speak and not self._responder_audio:
            for sentence in chunker.flush():
                await self._queue_sentence(sentence)
        elif self.speak and not self._reply_has_audio and self.text.strip():
            # The responder was to speak and answered in text only: the Synthesizer speaks the reply.
            fallback = SentenceChunker()
            for sentence in [*fallback.feed(self.text), *fallback.flush()]:
                await self._queue_sentence(sentence)
        await self._sentences.put(None)

    async def _queue_sentence(self, sentence: str) -> None:
        text = speakable(sentence)
        if not any(ch.isalnum() for ch in text):
            return
        if self.timings.first_sentence is None:
            self.timings.first_sentence = time.monotonic()
        await self._sentences.put(text)

    async def _speak(self) -> None:
        # Responder audio goes to the audio queue from _generate; sentences come here only to be spoken.
        while (sentence := await self._sentences.get()) is not None:
            request = SynthesisRequest(
                text=sentence,
                voice=self._request.voice,
                language=self._request.language,
                timings=self.word_timings,
            )
            chunks = stream_speech(self._synth, request, self._metrics)
            segment: Segment | None = None
            try:
                async for chunk in chunks:
                    if self.timings.first_tts_s is None:
                        self.timings.first_tts_s = chunk.generation_s
                    if segment is None or segment.complete:  # a sentence's pieces come together, last final
                        segment = self._segment(sentence, chunk)
                    segment.total_samples += len(chunk.pcm) // 2
                    segment.complete = chunk.final
                    await self._audio.put((segment, chunk.pcm))
            finally:
                await chunks.aclose()
        await self._audio.put(None)

    def _segment(self, sentence: str, chunk: SynthesisChunk) -> Segment:
        """The segment a sentence's audio fills, piece by piece; word timings come with a whole sentence."""
        text = sentence[chunk.text_start : chunk.text_end]
        words = tuple(
            replace(w, text_start=w.text_start - chunk.text_start, text_end=w.text_end - chunk.text_start)
            for w in chunk.words
        )
        estimate = int(min_speech_seconds(text, 1.0) * self.playout.sample_rate)
        segment = Segment(self._segments, text, 0, words=words, complete=False, estimated_samples=estimate)
        self._segments += 1
        return segment

    async def _play(self) -> None:
        while (item := await self._audio.get()) is not None:
            segment, pcm = item
            await self.playout.play(segment, pcm)
            if self.timings.first_audio is None and self.playout.first_frame_at is not None:
                self.timings.first_audio = self.playout.first_frame_at

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._generate(), name=f"{self.response_id}-generate")
                group.create_task(self._speak(), name=f"{self.response_id}-speak")
                group.create_task(self._play(), name=f"{self.response_id}-play")
        except BaseExceptionGroup as group_error:
            # One stage failed and the others were cancelled: surface the real cause.
            raise group_error.exceptions[0] from None
        finally:
            self.timings.end = time.monotonic()
            if self.timings.first_audio is None:
                self.timings.first_audio = self.playout.first_frame_at

    # -- what the user heard ---------------------------------------------------------------------
    def spoken_text(self) -> str:
        """The reply text covered by the audio actually sent, cut after the last word sent whole."""
        if not self.speak:
            return self.text  # a text-only reply: every delta was sent
        if self._audio_generated:  # the responder's own audio: no sentence map, words in proportion
            return _cut_words(self.text, self.playout.sent_samples / self._audio_generated)
        parts: list[str] = []
        for seg in self.playout.segments:
            text = seg.text or ""
            if seg.heard_whole:
                parts.append(text)
                continue
            if seg.sent_samples > 0:
                parts.append(_heard(seg, self.playout.sample_rate))
            break
        return " ".join(p for p in parts if p)
