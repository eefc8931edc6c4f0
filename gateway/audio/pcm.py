"""PCM s16le <-> float32 conversions and WAV containers (stdlib `wave`: no hand-written headers)."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np

SAMPLE_WIDTH = 2  # bytes per s16le sample


def float_to_pcm16(audio: np.ndarray) -> bytes:
    clipped = np.clip(audio, -1.0, 1.0)
    return (clipped * 32767.0).astype("<i2").tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def pcm_duration(num_bytes: int, sample_rate: int, channels: int = 1) -> float:
    return num_bytes / (SAMPLE_WIDTH * channels * sample_rate)


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return buf.getvalue()


@dataclass(frozen=True)
class WavAudio:
    pcm: bytes
    sample_rate: int
    channels: int
    sample_width: int

    @property
    def duration(self) -> float:
        return len(self.pcm) / (self.sample_width * self.channels * self.sample_rate)


def read_wav(data: bytes) -> WavAudio:
    """Parse a PCM WAV file; raises wave.Error / EOFError on anything else."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        return WavAudio(
            pcm=wav.readframes(wav.getnframes()),
            sample_rate=wav.getframerate(),
            channels=wav.getnchannels(),
            sample_width=wav.getsampwidth(),
        )
