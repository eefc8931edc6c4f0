"""Audio glue for backend output: joining chunk streams without clicks, and tempo without pitch change."""

from __future__ import annotations

import numpy as np
import soxr

from gateway.audio.pcm import float_to_pcm16, pcm16_to_float


class PcmJoiner:
    """Joins consecutive PCM chunks of one waveform into the gateway's rate.

    Chunks are consecutive samples of one signal (per-chunk WAVs of a code2wav window, or raw PCM pieces
    of an HTTP stream), so plain concatenation is already continuous. What would click is resampling each
    chunk on its own, and a 16-bit sample split across two network reads; a streaming resampler and a
    carried odd byte avoid both.
    """

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        self._in_rate: int | None = None
        self._stream: soxr.ResampleStream | None = None
        self._carry = b""

    def push(self, pcm: bytes, rate: int) -> bytes:
        data = self._carry + pcm
        if len(data) % 2:
            data, self._carry = data[:-1], data[-1:]
        else:
            self._carry = b""
        if self._in_rate is None:
            self._in_rate = rate
            if rate != self.out_rate:
                self._stream = soxr.ResampleStream(rate, self.out_rate, 1, dtype="float32", quality="HQ")
        elif rate != self._in_rate:
            raise ValueError(f"the sample rate changed mid-stream ({self._in_rate} -> {rate} Hz)")
        if self._stream is None or not data:
            return data
        return float_to_pcm16(self._stream.resample_chunk(pcm16_to_float(data)))

    def finish(self) -> bytes:
        """Flush the resampler. Raises ValueError when half a sample is left over (truncated audio)."""
        if self._carry:
            raise ValueError("the audio stream ended in the middle of a 16-bit sample")
        if self._stream is None:
            return b""
        return float_to_pcm16(self._stream.resample_chunk(np.zeros(0, np.float32), last=True))


def change_tempo(pcm: bytes, rate: int, speed: float) -> bytes:
    """Speed up or slow down speech keeping its pitch (FFmpeg `atempo` through PyAV). Blocking.

    vLLM-Omni refuses `speed` together with `stream` (fact sheet §3), so a streamed sentence is re-timed here.
    `atempo` takes 0.5..2.0 per stage; wider factors chain stages.
    """
    if abs(speed - 1.0) < 1e-3 or not pcm:
        return pcm
    import av
    from av.filter import Graph

    factors: list[float] = []
    rest = speed
    while rest > 2.0:
        factors.append(2.0)
        rest /= 2.0
    while rest < 0.5:
        factors.append(0.5)
        rest /= 0.5
    factors.append(rest)
    graph = Graph()
    nodes = [graph.add_abuffer(format="s16", sample_rate=rate, layout="mono")]
    nodes += [graph.add("atempo", f"{f:.6f}") for f in factors]
    nodes.append(graph.add("abuffersink"))
    graph.link_nodes(*nodes).configure()
    frame = av.AudioFrame.from_ndarray(
        np.frombuffer(pcm, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    frame.pts = 0
    graph.push(frame)
    graph.push(None)
    out: list[bytes] = []
    while True:
        try:
            result = graph.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            break
        out.append(result.to_ndarray().reshape(-1).astype("<i2").tobytes())
    return b"".join(out)
