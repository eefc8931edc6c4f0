"""Live captions for transcription sessions: transcript deltas while the user is still speaking.

Whisper is not a streaming model, so the speech so far is transcribed again every `interval_ms` of new audio,
and only the words two consecutive hypotheses agree on are sent (the LocalAgreement-2 policy of
whisper_streaming): a word sent is never taken back, at the cost of about one interval of delay. When the
turn is committed, the final transcript supplies whatever the deltas had not yet said. One hypothesis runs
at a time per session, so a slow machine sends fewer deltas rather than queueing work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

from gateway.audio.pcm import SAMPLE_WIDTH, pcm16_to_float
from gateway.audio.resample import resample
from gateway.engines.base import Transcriber

log = logging.getLogger(__name__)

_NORMALIZE = re.compile(r"[^\w']+")


def _key(word: str) -> str:
    return _NORMALIZE.sub("", word.lower())


def _agreed(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if _key(x) != _key(y):
            break
        n += 1
    return n


class LiveCaptions:
    def __init__(
        self,
        transcriber: Transcriber,
        sample_rate: int,
        interval_ms: int = 800,
        lead_in_ms: int = 200,
        idle_keep_ms: int = 2000,
        language: str | None = None,
    ) -> None:
        self.transcriber = transcriber
        self.rate = sample_rate
        self.language = language
        self._interval = interval_ms * sample_rate // 1000
        self._lead_in = lead_in_ms * sample_rate // 1000
        self._idle_keep = idle_keep_ms * sample_rate // 1000
        self._audio = bytearray()
        self._base = 0  # stream sample index of _audio[0]
        self._total = 0  # samples seen since the session began (the core's VAD clock)
        self._speech_start: int | None = None
        self._last_run = 0
        self._generation = 0  # bumped per turn: a hypothesis of a finished turn is dropped
        self._task: asyncio.Task[None] | None = None
        self._previous: list[str] = []
        self._sent: list[str] = []

    def append(self, pcm: bytes) -> None:
        self._audio += pcm
        self._total += len(pcm) // SAMPLE_WIDTH
        if self._speech_start is None:
            excess = len(self._audio) // SAMPLE_WIDTH - self._idle_keep
            if excess > 0:
                del self._audio[: excess * SAMPLE_WIDTH]
                self._base += excess

    def speech_started(self, audio_start_ms: int) -> None:
        start = max(self._base, audio_start_ms * self.rate // 1000 - self._lead_in)
        del self._audio[: (start - self._base) * SAMPLE_WIDTH]
        self._base = start
        self._speech_start = start
        self._last_run = start

    def due(self, in_speech: bool) -> bool:
        return (
            in_speech
            and self._speech_start is not None
            and (self._task is None or self._task.done())
            and self._total - self._last_run >= self._interval
        )

    def start(self, send: Callable[[str], Awaitable[None]]) -> None:
        self._last_run = self._total
        self._task = asyncio.create_task(self._hypothesis(bytes(self._audio), self._generation, send))

    async def _hypothesis(self, pcm: bytes, generation: int, send: Callable[[str], Awaitable[None]]) -> None:
        try:
            asr = self.transcriber
            samples = await asyncio.to_thread(resample, pcm16_to_float(pcm), self.rate, asr.sample_rate)
            words = (await asr.transcribe(samples, self.language)).text.split()
        except Exception:  # a caption is a courtesy: the final transcript still comes
            log.debug("live caption hypothesis failed", exc_info=True)
            return
        if generation != self._generation:
            return
        agreed = _agreed(self._previous, words)
        self._previous = words
        if agreed > len(self._sent):
            new = words[len(self._sent) : agreed]
            delta = (" " if self._sent else "") + " ".join(new)
            self._sent.extend(new)
            await send(delta)

    def finish(self, final: str) -> str:
        """The words of the final transcript after those the deltas already said; then on to the next turn.

        Counted in words, not matched: should the final transcript disagree with a word already sent (rare,
        two hypotheses agreed on it), the captions still end with the final's own ending."""
        words = final.split()
        sent = len(self._sent)
        rest = (" " if sent else "") + " ".join(words[sent:]) if len(words) > sent else ""
        self.reset()
        return rest

    def reset(self) -> None:
        self._generation += 1
        self._speech_start = None
        self._previous = []
        self._sent = []

    async def aclose(self) -> None:
        self._generation += 1
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
