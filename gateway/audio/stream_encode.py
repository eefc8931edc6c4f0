"""Incremental encoding: PCM goes in as the synthesizer yields it, encoded bytes come out ready to send.

FFmpeg's muxers (through PyAV) write into a sink without `seek`, so they behave as they do on a pipe: WAV gets
a streaming header (sizes 0xFFFFFFFF, which players read as "until the end"), FLAC leaves the total length in
STREAMINFO unknown, Ogg/Opus and ADTS/AAC and MP3 are streamable by design. Every `write` returns what the
muxer has produced so far; `finish` drains the encoder's look-ahead.

Blocking: call it from a worker thread (asyncio.to_thread), never on the event loop.
"""

from __future__ import annotations

import contextlib
import threading

import av
import numpy as np

from gateway.audio.encode import CONTENT_TYPES, OPUS_BITRATE

STREAMABLE = ("pcm", "wav", "mp3", "opus", "aac", "flac")

# container, codec, sample format, muxer options. Ogg pages are cut every 100 ms (default 1 s) so audio leaves
# as it is encoded; one page per 20 ms Opus packet would add ~27 bytes of overhead per packet.
_FORMATS: dict[str, tuple[str, str, str, dict[str, str]]] = {
    "wav": ("wav", "pcm_s16le", "s16", {}),
    "mp3": ("mp3", "libmp3lame", "s16p", {"write_xing": "0"}),
    "opus": ("ogg", "libopus", "s16", {"page_duration": "100000"}),
    "aac": ("adts", "aac", "fltp", {}),
    "flac": ("flac", "flac", "s16", {}),
}
_RATES = {
    "mp3": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "opus": (8000, 12000, 16000, 24000, 48000),
}


class _Sink:
    """A write-only file for the muxer: no seek, so FFmpeg treats it as a pipe."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class StreamEncoder:
    def __init__(self, fmt: str, sample_rate: int, page_ms: int = 100) -> None:
        if fmt not in STREAMABLE:
            raise ValueError(f"unsupported audio format {fmt!r}")
        if fmt in _RATES and sample_rate not in _RATES[fmt]:
            raise ValueError(f"{fmt} cannot encode {sample_rate} Hz audio")
        self.format = fmt
        self.sample_rate = sample_rate
        self.content_type = CONTENT_TYPES[fmt]
        self._pts = 0
        self._closed = False
        # A cancelled request closes the encoder from the event loop while a worker thread may still be inside
        # write(): the codec must never be freed under it.
        self._lock = threading.Lock()
        self._sink = _Sink()
        self._container = None
        if fmt == "pcm":
            return
        container_fmt, codec, sample_fmt, options = _FORMATS[fmt]
        if fmt == "opus":
            options = {**options, "page_duration": str(page_ms * 1000)}
        # A small I/O buffer: the muxer hands bytes over at every packet instead of every 32 KiB.
        self._container = av.open(
            self._sink, mode="w", format=container_fmt, options=options, buffer_size=512
        )
        stream = self._container.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)  # an audio codec gives an audio stream
        self._stream = stream
        if fmt == "opus":
            self._stream.bit_rate = OPUS_BITRATE
        self._resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=sample_rate)

    def write(self, pcm: bytes) -> bytes:
        """Encode s16le mono PCM; returns the bytes ready so far (empty while the codec fills a frame)."""
        with self._lock:
            if self._closed:
                return b""  # closed by a cancelled stream: nobody will read this any more
            if self._container is None:
                return pcm
            if not pcm:
                return b""
            return self._encode(pcm)

    def _encode(self, pcm: bytes) -> bytes:
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        self._pts += samples.shape[1]
        container = self._container
        assert container is not None  # write() passes PCM through when there is no container
        for resampled in self._resampler.resample(frame):
            for packet in self._stream.encode(resampled):
                container.mux(packet)
        return self._sink.drain()

    def finish(self) -> bytes:
        """Flush the encoder and close the container; returns the last bytes."""
        with self._lock:
            if self._closed:
                return b""
            self._closed = True
            if self._container is None:
                return b""
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            return self._sink.drain()

    def close(self) -> None:
        """Release the codec without producing output (a cancelled stream)."""
        with self._lock:
            if self._closed or self._container is None:
                self._closed = True
                return
            self._closed = True
            # Closing a half-written stream: nothing left worth saving, only the codec to free.
            with contextlib.suppress(av.error.FFmpegError, ValueError):
                self._container.close()
