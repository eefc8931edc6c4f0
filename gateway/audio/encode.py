"""Encode PCM s16le mono into the formats clients ask for, with FFmpeg's codecs through PyAV."""

from __future__ import annotations

import io
from typing import Literal

import av
import numpy as np

from gateway.audio.pcm import wav_bytes

AudioFormat = Literal["wav", "pcm", "mp3", "opus", "aac", "flac"]

CONTENT_TYPES: dict[str, str] = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}

# libopus' default (64 kb/s) is music quality; 32 kb/s mono is transparent for speech and half the bytes.
OPUS_BITRATE = 32000

# container, codec, sample format, and the rates the codec accepts (None: any)
_CODECS: dict[str, tuple[str, str, str, tuple[int, ...] | None]] = {
    "mp3": ("mp3", "libmp3lame", "s16p", (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)),
    "opus": ("ogg", "libopus", "s16", (8000, 12000, 16000, 24000, 48000)),
    "aac": ("adts", "aac", "fltp", None),
    "flac": ("flac", "flac", "s16", None),
}


def encode(pcm: bytes, sample_rate: int, fmt: str) -> bytes:
    """Blocking; run it off the event loop."""
    if fmt == "pcm":
        return pcm
    if fmt == "wav":
        return wav_bytes(pcm, sample_rate)
    if fmt not in _CODECS:
        raise ValueError(f"unsupported audio format {fmt!r}")
    container_fmt, codec, sample_fmt, rates = _CODECS[fmt]
    if rates is not None and sample_rate not in rates:
        raise ValueError(f"{fmt} cannot encode {sample_rate} Hz audio")
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container_fmt) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)  # an audio codec gives an audio stream
        if fmt == "opus":
            stream.bit_rate = OPUS_BITRATE
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=sample_rate)
        for resampled in resampler.resample(frame):
            for packet in stream.encode(resampled):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()
