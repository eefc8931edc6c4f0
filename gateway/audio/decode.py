"""Decode an uploaded audio file (any container/codec FFmpeg knows) to mono float32 at a target rate."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np


class AudioDecodeError(ValueError):
    """The bytes are not audio this decoder understands."""


class AudioTooLongError(ValueError):
    def __init__(self, limit_s: float) -> None:
        super().__init__(f"audio is longer than the limit of {limit_s:g} s")
        self.limit_s = limit_s


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    source_rate: int
    source_format: str

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate


def decode_audio(data: bytes, target_rate: int, max_seconds: float | None = None) -> DecodedAudio:
    """Blocking: run it in a worker thread. Resampling is FFmpeg's (libswresample) during decode."""
    if not data:
        raise AudioDecodeError("the file is empty")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise AudioDecodeError(f"not a decodable audio file ({exc.__class__.__name__})") from None
    try:
        if not container.streams.audio:
            raise AudioDecodeError("the file holds no audio stream")
        stream = container.streams.audio[0]
        source_rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)
        parts: list[np.ndarray] = []
        total = 0
        limit = int(max_seconds * target_rate) if max_seconds else None

        def take(frames: list[av.AudioFrame]) -> None:
            nonlocal total
            for out in frames:
                arr = out.to_ndarray().reshape(-1)
                parts.append(arr)
                total += arr.size
                if limit is not None and total > limit:
                    raise AudioTooLongError(max_seconds or 0)

        for frame in container.decode(stream):
            take(resampler.resample(frame))
        take(resampler.resample(None))
        fmt = container.format.name
    except (AudioDecodeError, AudioTooLongError):
        raise
    except (av.error.FFmpegError, ValueError) as exc:
        raise AudioDecodeError(f"the audio could not be decoded ({exc.__class__.__name__})") from None
    finally:
        container.close()
    samples = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise AudioDecodeError("the file holds no audio samples")
    return DecodedAudio(samples=samples, sample_rate=target_rate, source_rate=source_rate, source_format=fmt)
