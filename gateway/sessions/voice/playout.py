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
    """A stretch of reply audio and the text it speaks (None when the responder made the audio itself)."""

    index: int
    text: str | None
    total_samples: int
    sent_samples: int = 0
    # When asked for (ResponseRun word_timings): seconds from the segment's start, offsets into `text`.
    words: tuple[WordTiming, ...] = ()


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
