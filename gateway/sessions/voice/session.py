"""The conversation core for one connection: input buffer, server VAD, turns, replies, barge-in, memory.

Protocol-free: an adapter calls `append_audio` / `commit` / `interrupt` / `update` / `clear_audio` and
receives `events` dataclasses through the `emit` callback; it alone decides names and wire shapes. Everything
here lives and dies with the connection.

Hooks for the OpenAI Realtime adapter: `commit(respond=False)` (a turn that is only transcribed),
`respond()` (a reply to the conversation as it stands, with per-reply instructions, speech on/off and token
limit), `TurnDetection.create_response`, a pluggable `history`, and `ResponseDone.segments`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from gateway.audio.pcm import pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import (
    ChatMessage,
    ConversationRequest,
    SynthesisRequest,
    Transcription,
)
from gateway.engines.registry import Engines
from gateway.errors import from_engine_error, internal_error
from gateway.metrics import Metrics
from gateway.sessions.voice.buffer import InputAudioBuffer
from gateway.sessions.voice.config import SessionConfig, apply_update
from gateway.sessions.voice.errors import VoiceError
from gateway.sessions.voice.events import (
    ErrorEvent,
    Interrupted,
    ResponseDone,
    ResponseStarted,
    SpeechStarted,
    SpeechStopped,
    Transcript,
    TurnCommitted,
    VoiceEvent,
)
from gateway.sessions.voice.history import ConversationHistory, History
from gateway.sessions.voice.pipeline import ResponseRun, ResponseTimings
from gateway.sessions.voice.turn import TurnDetector, TurnSignal
from gateway.settings import Settings

log = logging.getLogger(__name__)

Emit = Callable[[VoiceEvent], Awaitable[None]]

# Early transcription: once a pause inside the user's speech lasts this long, transcribe what was said so far
# while server VAD waits out silence_duration_ms. If the user stays silent, the turn's transcript is ready
# (or nearly) when VAD commits, and ASR drops out of the reply latency; if they talk on, the guess is dropped.
EARLY_ASR_MS = 200


def _to_rate(pcm: bytes, from_rate: int, to_rate: int) -> np.ndarray:
    return resample(pcm16_to_float(pcm), from_rate, to_rate)


class VoiceSession:
    def __init__(
        self,
        engines: Engines,
        settings: Settings,
        emit: Emit,
        metrics: Metrics | None = None,
        history: History | None = None,
        protocol: str = "voice",
    ) -> None:
        self._engines = engines
        self._emit = emit
        self._metrics = metrics
        self._protocol = protocol  # the turn metrics' `protocol` label: "voice" or "realtime"
        self.sample_rate = settings.audio_sample_rate
        self._max_tokens_limit = settings.voice_max_response_tokens
        self._lead_ms = settings.voice_audio_lead_ms
        default_tokens = SessionConfig.model_fields["max_response_tokens"].default
        self.config = SessionConfig(max_response_tokens=min(default_tokens, self._max_tokens_limit))
        self.buffer = InputAudioBuffer(self.sample_rate, settings.voice_max_input_seconds)
        self.history: History = (
            history
            if history is not None
            else ConversationHistory(settings.voice_history_turns, settings.voice_history_tokens)
        )
        self.speak = True  # replies are spoken; False: text only (for replies that VAD commits start)
        self.word_timings = False  # True: ResponseDone.segments carry word timings (Realtime truncation)
        self._transcriptions: set[asyncio.Task[None]] = set()  # turns committed without a reply
        self.turns = TurnDetector(self.sample_rate, self.config.turn_detection)
        self._task: asyncio.Task[None] | None = None
        self._interrupt_reason = "client"
        self._interrupt_at: float | None = None  # when the running reply was told to stop
        self._seq = 0
        self._speech_seen = False  # server VAD heard speech since the last commit
        # (buffer bytes, VAD speech windows at that point, transcription) of the pause being waited out
        self._early: tuple[int, int, asyncio.Task[Transcription]] | None = None
        self._early_for: dict[str, asyncio.Task[Transcription]] = {}  # item id -> a usable early result
        self.closed = False
        if metrics is not None:
            metrics.open_turn_series(protocol, self._engine_names())

    # -- state -------------------------------------------------------------------------------------
    @property
    def responding(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _send(self, event: VoiceEvent) -> None:
        if not self.closed:
            await self._emit(event)

    # -- session -----------------------------------------------------------------------------------
    def update(self, changes: Any) -> SessionConfig:
        """Validate and apply a partial config; voice and language are checked against the real engines
        (their errors reach the client as they are: one error tree, gateway/errors.py)."""
        new = apply_update(self.config, changes, self._max_tokens_limit)
        resolved = self._engines.synthesizer.resolve(
            SynthesisRequest(text=".", voice=new.voice, language=new.language)
        )
        self._engines.transcriber.check_language(resolved.language)
        if self._engines.responder is not None:
            self._engines.responder.check_language(resolved.language)
        new = new.model_copy(update={"voice": resolved.voice, "language": resolved.language})
        if new.turn_detection != self.config.turn_detection:
            self.turns.reconfigure(new.turn_detection)
            if not new.turn_detection.enabled:
                self.turns.reset()
        self.config = new
        return new

    # -- input audio ---------------------------------------------------------------------------------
    async def append_audio(self, pcm: bytes) -> None:
        InputAudioBuffer.check_frame(pcm)
        td = self.config.turn_detection
        # VAD sees every frame, even one the full buffer drops, so the end of speech is still found.
        signals = []
        if td.enabled:
            samples = pcm16_to_float(pcm)
            # A 20 ms frame costs ~0.1 ms of VAD: inline is cheaper than a thread hop. A client that sends
            # seconds at once must not stall the loop, though.
            if samples.size > self.sample_rate // 5:
                signals = await asyncio.to_thread(self.turns.feed, samples)
            else:
                signals = self.turns.feed(samples)
        accepted = self.buffer.append(pcm)
        for signal in signals:
            if signal.signal is TurnSignal.SPEECH_STARTED:
                self._speech_seen = True
                await self._send(SpeechStarted(signal.stream_ms))
                if td.interrupt_response and self.responding:
                    await self.interrupt("speech")
            else:
                await self._send(SpeechStopped(signal.stream_ms))
                if len(self.buffer):
                    await self.commit(auto=True, respond=td.create_response)
        if td.enabled:
            self._early_transcription(td.silence_duration_ms)
        if td.enabled and not self.turns.in_speech:
            # Waiting for speech: keep only the padding that precedes it, so silence never fills the buffer.
            self.buffer.keep_last(max(td.prefix_padding_ms, td.min_speech_ms + 64))
        if not accepted and not self.buffer.overflowed:
            self.buffer.overflowed = True
            raise VoiceError(
                "input_audio_too_long",
                f"the input buffer holds at most {self.buffer.max_seconds:g} s of audio; further audio is "
                "dropped until it is committed or cleared",
            )

    def clear_audio(self) -> None:
        self.buffer.clear()
        self.turns.reset()
        self._speech_seen = False
        self._drop_early()

    # -- early transcription ---------------------------------------------------------------------------
    def _early_transcription(self, silence_duration_ms: int) -> None:
        if self._early is not None:
            if self._early[1] != self.turns.speech_windows:
                self._drop_early()  # the user went on talking: that transcript would miss words
            return
        if self.turns.in_speech and self.turns.silence_ms >= min(EARLY_ASR_MS, silence_duration_ms // 2):
            pcm = self.buffer.snapshot()
            task = asyncio.create_task(self._early_asr(pcm), name="early-asr")
            self._early = (len(pcm), self.turns.speech_windows, task)

    async def _early_asr(self, pcm: bytes) -> Transcription:
        samples = await asyncio.to_thread(
            _to_rate, pcm, self.sample_rate, self._engines.transcriber.sample_rate
        )
        return await self._asr(samples)

    async def _asr(self, samples: np.ndarray) -> Transcription:
        return await self._engines.transcriber.transcribe(samples, self.config.language)

    def _drop_early(self) -> None:
        if self._early is not None:
            self._early[2].cancel()
            self._early = None

    def _claim_early(self, item_id: str) -> None:
        """At commit: keep the early transcript for this turn if no speech came after it."""
        early, self._early = self._early, None
        if early is None:
            return
        if early[1] == self.turns.speech_windows and self.turns.speech_windows > 0:
            self._early_for[item_id] = early[2]
        else:
            early[2].cancel()

    # -- turns ---------------------------------------------------------------------------------------
    async def commit(self, auto: bool = False, respond: bool = True) -> None:
        """End the user's turn. `respond=False` only transcribes it (into the history) and leaves the reply
        to a later `respond()`, as the Realtime API's manual commit does."""
        if not len(self.buffer):
            raise VoiceError("empty_audio_buffer", "nothing to commit: the input audio buffer is empty")
        if self.config.turn_detection.enabled and not self._speech_seen:
            # With server VAD on, the buffer only ever holds pre-speech padding until speech starts.
            raise VoiceError(
                "empty_audio_buffer", "nothing to commit: server VAD heard no speech since the last turn"
            )
        t0 = time.monotonic()
        if respond and self.responding:
            await self.interrupt("commit")
        audio_ms = self.buffer.duration_ms
        pcm = self.buffer.take()
        self._seq += 1
        item_id, response_id = f"item_{self._seq}", f"resp_{self._seq}"
        self._claim_early(item_id)
        self.turns.reset()
        self._speech_seen = False
        await self._send(TurnCommitted(item_id, audio_ms, auto))
        if not respond:
            task = asyncio.create_task(self._transcribe_turn(item_id, pcm), name=item_id)
            self._transcriptions.add(task)
            task.add_done_callback(self._transcriptions.discard)
            return
        self._task = asyncio.create_task(self._respond(item_id, response_id, pcm, t0), name=response_id)

    async def respond(
        self,
        instructions: str | None = None,
        speak: bool | None = None,
        max_tokens: int | None = None,
        messages: list[ChatMessage] | None = None,
    ) -> str:
        """Reply to the conversation as it stands (no new audio); returns the response id. `messages`, when
        given, is the whole prompt instead of the history (Realtime's out-of-band responses)."""
        if self.responding:
            raise VoiceError("response_in_progress", "a reply is already in progress; interrupt it first")
        self._seq += 1
        response_id = f"resp_{self._seq}"
        reply = self._respond(
            "", response_id, None, time.monotonic(), instructions, speak, max_tokens, messages
        )
        self._task = asyncio.create_task(reply, name=response_id)
        return response_id

    async def _transcribe_turn(self, item_id: str, pcm: bytes) -> None:
        try:
            asr_rate = self._engines.transcriber.sample_rate
            samples = await asyncio.to_thread(_to_rate, pcm, self.sample_rate, asr_rate)
            timings = ResponseTimings(commit=time.monotonic())
            text = await self._transcribe(item_id, samples, timings)
            if self._metrics is not None:  # a turn transcribed now and answered later: its ASR time counts
                self._metrics.observe_turn(self._protocol, timings.as_dict(), self._engine_names())
            if text:
                self.history.add("user", text)
        except Exception as exc:
            err = from_engine_error(exc)
            if err is None:
                log.exception("transcription of %s failed", item_id)
                err = internal_error("the transcription failed on the server")
            await self._send(ErrorEvent(err.code, err.message))

    async def interrupt(self, reason: str = "client") -> bool:
        """Stop the reply now (generation, TTS and audio); False when there is none."""
        task = self._task
        if task is None or task.done():
            return False
        self._interrupt_reason = reason
        self._interrupt_at = time.monotonic()
        task.cancel()
        await asyncio.wait({task})
        self._interrupt_at = None
        return True

    async def close(self) -> None:
        self.closed = True
        self._drop_early()
        for early in self._early_for.values():
            early.cancel()
        self._early_for.clear()
        for pending in list(self._transcriptions):
            pending.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task})
        self._task = None
        self.history.clear()
        self.buffer.clear()

    # -- one reply -----------------------------------------------------------------------------------
    def _remember(self, user_text: str | None, assistant_text: str) -> None:
        if user_text:
            self.history.add("user", user_text)
        self.history.add("assistant", assistant_text)

    async def _transcribe(self, item_id: str, samples: np.ndarray, timings: ResponseTimings) -> str:
        """The turn's transcript (the early one when it is still valid); `asr_s` is the wait it cost."""
        t = time.monotonic()
        result: Transcription | None = None
        early = self._early_for.pop(item_id, None)
        if early is not None:
            try:
                result = await early
            except Exception:  # a failed guess costs nothing but the regular transcription below
                log.debug("early transcription of %s failed", item_id, exc_info=True)
        if result is None:
            result = await self._asr(samples)
        timings.asr_s = time.monotonic() - t
        await self._send(Transcript(item_id, result.text, result.language, result.duration))
        return result.text.strip()

    async def _respond(
        self,
        item_id: str,
        response_id: str,
        pcm: bytes | None,
        t0: float,
        instructions: str | None = None,
        speak: bool | None = None,
        max_tokens: int | None = None,
        messages: list[ChatMessage] | None = None,
    ) -> None:
        timings = ResponseTimings(commit=t0)
        cfg = self.config
        run: ResponseRun | None = None
        asr_task: asyncio.Task[str] | None = None
        user_text: str | None = None
        try:
            responder = self._engines.responder
            if responder is None:
                raise VoiceError("engine_unavailable", "this engine set has no conversation model")
            asr_rate = self._engines.transcriber.sample_rate
            prior = self.history.messages(instructions or cfg.instructions)
            if pcm is None:
                # A reply to the history as it stands: turns still being transcribed belong to it.
                if self._transcriptions:
                    await asyncio.wait(set(self._transcriptions))
                    prior = self.history.messages(instructions or cfg.instructions)
                history, audio = (prior if messages is None else messages), None
            elif responder.accepts_audio:
                # The model hears the audio itself; the transcript (for the client and the memory) runs
                # beside it instead of in front of it.
                samples = await asyncio.to_thread(_to_rate, pcm, self.sample_rate, asr_rate)
                asr_task = asyncio.create_task(self._transcribe(item_id, samples, timings))
                history, audio = prior, samples
            else:
                samples = await asyncio.to_thread(_to_rate, pcm, self.sample_rate, asr_rate)
                user_text = await self._transcribe(item_id, samples, timings)
                if not user_text:
                    raise VoiceError("no_speech", "no speech was recognised in the committed audio")
                history, audio = [*prior, ChatMessage("user", user_text)], None
            request = ConversationRequest(
                history=history,
                audio=audio,
                audio_rate=asr_rate,
                voice=cfg.voice,
                language=cfg.language,
                max_tokens=max_tokens or cfg.max_response_tokens,
            )
            run = ResponseRun(
                response_id=response_id,
                responder=responder,
                synthesizer=self._engines.synthesizer,
                request=request,
                emit=self._send,
                sample_rate=self.sample_rate,
                timings=timings,
                lead_ms=self._lead_ms,
                metrics=self._metrics,
                speak=self.speak if speak is None else speak,
                word_timings=self.word_timings,
            )
            await self._send(ResponseStarted(response_id, item_id))
            await run.run()
            if asr_task is not None:
                user_text = await asr_task
            self._remember(user_text, run.text)
            self._observe(run)
            await self._send(self._done(run, "completed", run.text))
        except asyncio.CancelledError:
            kept = run.spoken_text() if run is not None else ""
            if asr_task is not None:
                finished = asr_task.done() and not asr_task.cancelled() and asr_task.exception() is None
                user_text = asr_task.result() if finished else None
                asr_task.cancel()
            if user_text or kept:
                self._remember(user_text, kept)
            sent_ms = run.playout.sent_ms if run is not None else 0
            if run is not None:
                self._observe(run, self._interrupt_at)  # an interrupted reply's first audio still counts
            await self._send(Interrupted(response_id, self._interrupt_reason, sent_ms, kept))
            if run is not None:
                await self._send(self._done(run, "interrupted", kept))
            raise
        except Exception as exc:
            err = from_engine_error(exc)
            if err is None:
                log.exception("voice reply %s failed", response_id)
                err = internal_error("the reply failed on the server")
            if asr_task is not None:
                asr_task.cancel()
            await self._send(ErrorEvent(err.code, err.message))
            if run is not None:
                kept = run.spoken_text()
                self._remember(user_text, kept)
                await self._send(self._done(run, "failed", kept))

    def _observe(self, run: ResponseRun, interrupted_at: float | None = None) -> None:
        """The finished reply's stage timings into the metrics: the same numbers as its response.done."""
        if self._metrics is None:
            return
        t = run.timings
        engines = self._engine_names()
        name = engines["responder"]
        if t.first_audio is not None:
            self._metrics.audio_generation_latency.labels(engine=name, kind="first_audio").observe(
                t.first_audio - t.commit
            )
        self._metrics.observe_turn(self._protocol, t.as_dict(), engines)
        # `end` is stamped when the pipeline's stages have stopped: no frame leaves after it. A reply that had
        # ended before the interruption arrived stopped nothing.
        if interrupted_at is not None and t.end is not None and t.end >= interrupted_at:
            self._metrics.observe_barge_in(self._protocol, name, t.end - interrupted_at)

    def _engine_names(self) -> dict[str, str]:
        """Engine role -> name: the turn metrics' `engine` label (the configured set, so bounded)."""
        responder = self._engines.responder
        return {
            "responder": responder.name if responder is not None else "unknown",
            "transcriber": self._engines.transcriber.name,
            "synthesizer": self._engines.synthesizer.name,
        }

    def _done(self, run: ResponseRun, status: str, text: str) -> ResponseDone:
        usage: dict[str, Any] = {"completion_tokens": run.completion_tokens}
        if run.tokens_per_second is not None:
            usage["tokens_per_second"] = round(run.tokens_per_second, 1)
        return ResponseDone(
            response_id=run.response_id,
            status=status,
            text=text,
            audio_ms=run.playout.sent_ms,
            timings=run.timings.as_dict(),
            usage=usage,
            segments=tuple(run.playout.segments),
        )
