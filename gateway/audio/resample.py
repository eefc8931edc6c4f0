"""Sample-rate conversion with libsoxr (high quality, deterministic for equal input)."""

from __future__ import annotations

import numpy as np
import soxr


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate or audio.size == 0:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio.astype(np.float32, copy=False), from_rate, to_rate, quality="HQ")
