"""The user's not-yet-committed audio: whole s16le samples only, bounded in duration."""

from __future__ import annotations

from gateway.audio.pcm import SAMPLE_WIDTH
from gateway.sessions.voice.errors import VoiceError


class InputAudioBuffer:
    def __init__(self, sample_rate: int, max_seconds: float) -> None:
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self._max_bytes = int(max_seconds * sample_rate) * SAMPLE_WIDTH
        self._data = bytearray()
        self.overflowed = False  # one error per overflow, not one per frame

    def __len__(self) -> int:
        return len(self._data)

    @property
    def duration_ms(self) -> int:
        return len(self._data) * 1000 // (SAMPLE_WIDTH * self.sample_rate)

    @staticmethod
    def check_frame(pcm: bytes) -> None:
        if len(pcm) % SAMPLE_WIDTH:
            raise VoiceError(
                "odd_length_frame",
                f"audio frames must hold whole 16-bit samples; got {len(pcm)} bytes (odd length)",
            )

    def append(self, pcm: bytes) -> bool:
        """Append a checked frame; False (and the frame dropped) once the buffer is full."""
        if len(self._data) + len(pcm) > self._max_bytes:
            return False
        self._data += pcm
        return True

    def keep_last(self, ms: int) -> None:
        """Drop all but the last `ms` of audio (pre-speech padding while server VAD waits for speech)."""
        keep = ms * self.sample_rate // 1000 * SAMPLE_WIDTH
        if len(self._data) > keep:
            del self._data[: len(self._data) - keep]

    def snapshot(self) -> bytes:
        return bytes(self._data)

    def take(self) -> bytes:
        data = bytes(self._data)
        self.clear()
        return data

    def clear(self) -> None:
        self._data.clear()
        self.overflowed = False
