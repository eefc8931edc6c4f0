"""Reply audio out in fixed frames, paced to real time plus a small lead, counting exactly what was sent.

Pacing is what makes barge-in honest: audio is released only slightly ahead of playback, so when the user
interrupts, little is queued at the client and "what was sent" is close to "what was heard".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.audio.pcm import SAMPLE_WIDTH
from gateway.engines.base import WordTiming


@dataclass
class Segment:
    """A stretch of reply audio and the text it speaks (None when the responder made the audio itself).

    A spoken sentence is one segment even when its audio comes in pieces: `total_samples` grows with each
    piece synthesized and `complete` turns True with the last one.
    """

    index: int
    text: str | None
    total_samples: int
    sent_samples: int = 0
    # When asked for (ResponseRun word_timings): seconds from the segment's start, offsets into `text`.
    words: tuple[WordTiming, ...] = ()
    complete: bool = True  # all of its audio has been synthesized
    estimated_samples: int = 0  # a lower bound on its length while it is not complete

    @property
    def expected_samples(self) -> int:
        """Its length: the real one once complete, before that at least the estimate."""
        return self.total_samples if self.complete else max(self.total_samples, self.estimated_samples)

    @property
    def heard_whole(self) -> bool:
        return self.complete and self.sent_samples >= self.total_samples


class Playout:
    def __init__(
        self,
        send: Callable[[bytes, int], Awaitable[None]],
        sample_rate: int,
        frame_ms: int = 20,
        lead_ms: int = 300,
    ) -> None:
        self._send = send  # (pcm, segment index)
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate * frame_ms // 1000 * SAMPLE_WIDTH
        self._frame_s = frame_ms / 1000
        self._lead_s = lead_ms / 1000
        self._play_end = 0.0  # monotonic time at which the client will have played everything sent
        self.first_frame_at: float | None = None
        self.sent_samples = 0
        self.segments: list[Segment] = []

    async def play(self, segment: Segment, pcm: bytes) -> None:
        if not self.segments or self.segments[-1] is not segment:  # a later piece of a sentence: same one
            self.segments.append(segment)
        for offset in range(0, len(pcm), self.frame_bytes):
            frame = pcm[offset : offset + self.frame_bytes]
            ahead = self._play_end - time.monotonic()
            if ahead > self._lead_s:
                await asyncio.sleep(ahead - self._lead_s)
            now = time.monotonic()
            if self.first_frame_at is None:
                self.first_frame_at = now
            samples = len(frame) // SAMPLE_WIDTH
            # Counted before the send: once send() starts, the frame is in the transport's buffer even if
            # this task is cancelled while it drains.
            segment.sent_samples += samples
            self.sent_samples += samples
            self._play_end = max(self._play_end, now) + samples / self.sample_rate
            await self._send(frame, segment.index)

    @property
    def sent_ms(self) -> int:
        return self.sent_samples * 1000 // self.sample_rate
