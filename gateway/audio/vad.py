"""Streaming voice activity detection with the Silero VAD v6 model that faster-whisper bundles (ONNX).

Frame-based: feed PCM of any length at the stream's rate, get one speech probability per 32 ms window
(512 samples at 16 kHz). The recurrent state and the 64-sample context carry across calls, so a stream
fed in 20 ms frames gets the same probabilities as one fed whole.

Why Silero rather than webrtcvad: it ships with faster-whisper (no extra dependency), it separates speech
from noise far better than an energy/GMM detector, and one window costs about 0.06 ms on one core here,
so running it inline for a 20 ms frame is cheaper than handing the frame to a thread.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import soxr

VAD_RATE = 16000
WINDOW = 512  # samples at 16 kHz: 32 ms
CONTEXT = 64


@functools.lru_cache(maxsize=1)
def _session() -> object:
    # One ONNX session for every stream: InferenceSession.run is thread-safe and the state is per stream.
    from faster_whisper.vad import get_vad_model

    return get_vad_model().session


def load() -> None:
    """Load the model ahead of the first stream (start-up), so no session pays for it."""
    _session()


@dataclass(frozen=True)
class VadWindow:
    probability: float
    end_s: float  # stream time at the end of this window, in seconds since the stream began


class StreamingVAD:
    def __init__(self, input_rate: int) -> None:
        self.input_rate = input_rate
        self._resampler = (
            soxr.ResampleStream(input_rate, VAD_RATE, 1, dtype="float32", quality="HQ")
            if input_rate != VAD_RATE
            else None
        )
        self._pending = np.zeros(0, np.float32)
        self._context = np.zeros(CONTEXT, np.float32)
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)
        self._windows = 0

    def reset(self) -> None:
        self.__init__(self.input_rate)  # type: ignore[misc]

    def process(self, samples: np.ndarray) -> list[VadWindow]:
        """`samples`: float32 mono at `input_rate`. Returns the windows completed by this call."""
        chunk = samples.astype(np.float32, copy=False)
        if self._resampler is not None:
            chunk = self._resampler.resample_chunk(chunk)
        buf = np.concatenate([self._pending, chunk]) if self._pending.size else chunk
        n = buf.size // WINDOW
        self._pending = buf[n * WINDOW :].copy()
        if n == 0:
            return []
        session = _session()
        out: list[VadWindow] = []
        for i in range(n):
            window = buf[i * WINDOW : (i + 1) * WINDOW]
            x = np.concatenate([self._context, window])[None, :]
            prob, self._h, self._c = session.run(  # type: ignore[attr-defined]
                None, {"input": x, "h": self._h, "c": self._c}
            )
            self._context = window[-CONTEXT:].copy()
            self._windows += 1
            out.append(VadWindow(float(prob.reshape(-1)[0]), self._windows * WINDOW / VAD_RATE))
        return out
