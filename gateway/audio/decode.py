"""Decode an uploaded audio file to mono float32 at a target rate.

Only the containers the API documents are opened (WAV, MP3, Ogg, FLAC, WebM/Matroska, MP4/M4A, AAC,
AIFF), each with its demuxer named explicitly once the first bytes are recognized here. FFmpeg's own
probing would pick any demuxer it has, including SDP, RTP, RTSP or HLS descriptions that open network
sockets: a 103-byte SDP upload bound UDP ports (one on 0.0.0.0) and held a decode thread for 20 s. The
decoded length is checked against the limit frame by frame, and first against the length the header
declares, so a small file of hours of silence is refused before it is decoded.
"""

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


SUPPORTED = "WAV, MP3, Ogg (Opus, Vorbis, FLAC), FLAC, WebM/Matroska, MP4/M4A, AAC (ADTS), AIFF"

# Nothing a demuxer opens by name: no nested URL (HLS segments, a MOV reference, a concat list) is fetched.
_OPTIONS = {"protocol_whitelist": "none", "enable_drefs": "0"}


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate: int
    source_rate: int
    source_format: str

    @property
    def duration(self) -> float:
        return self.samples.size / self.sample_rate


def _id3_size(data: bytes) -> int:
    """Length of a leading ID3v2 tag (header, body, optional footer), 0 when there is none."""
    if len(data) < 10 or data[:3] != b"ID3" or any(b & 0x80 for b in data[6:10]):
        return 0
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return 10 + size + (10 if data[5] & 0x10 else 0)


def sniff_format(data: bytes) -> str | None:
    """The FFmpeg demuxer for an allowed container recognized by its magic bytes, else None."""
    head = data[:16]
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML: WebM and Matroska
        return "matroska"
    if head[4:8] == b"ftyp":
        return "mov"  # FFmpeg's mov,mp4,m4a,3gp demuxer
    tag = _id3_size(data)
    if tag:
        # An ID3v2 tag may lead MP3, AAC or FLAC; FFmpeg skips it before the demuxer reads.
        inner = sniff_format(data[tag : tag + 16])
        return inner if inner in ("mp3", "aac", "flac") else ("mp3" if len(data) > tag else None)
    if head[:4] == b"fLaC":
        return "flac"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        # Frame sync: ADTS has layer bits 00 (reserved in MPEG audio), MPEG layer I-III does not.
        return "aac" if head[1] & 0x06 == 0 else "mp3"
    return None


def _open(data: bytes) -> av.container.InputContainer:
    fmt = sniff_format(data)
    if fmt is None:
        raise AudioDecodeError(f"not a supported audio file (accepted: {SUPPORTED})")
    try:
        return av.open(io.BytesIO(data), mode="r", format=fmt, options=_OPTIONS)
    except (av.error.FFmpegError, ValueError, LookupError, ArithmeticError) as exc:
        raise AudioDecodeError(f"not a decodable audio file ({exc.__class__.__name__})") from None


def decode_audio(data: bytes, target_rate: int, max_seconds: float | None = None) -> DecodedAudio:
    """Blocking: run it in a worker thread. Resampling is FFmpeg's (libswresample) during decode."""
    if not data:
        raise AudioDecodeError("the file is empty")
    container = _open(data)
    limit = int(max_seconds * target_rate) if max_seconds else None
    parts: list[np.ndarray] = []
    total = 0
    try:
        if not container.streams.audio:
            raise AudioDecodeError("the file holds no audio stream")
        stream = container.streams.audio[0]
        codec = stream.codec_context
        if codec is None:  # e.g. a WAV header with 0 bits per sample: FFmpeg finds no decoder for it
            raise AudioDecodeError("the audio stream has no codec this server can decode")
        source_rate = int(codec.sample_rate or 0)
        if source_rate <= 0 or not codec.channels:
            raise AudioDecodeError("the audio stream declares no sample rate or channels")
        if max_seconds and stream.duration and stream.time_base:
            declared = float(stream.duration * stream.time_base)
            if declared > max_seconds * 1.01:  # a header may round; decoding below checks exactly
                raise AudioTooLongError(max_seconds)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=target_rate)

        def take(frames: list[av.AudioFrame]) -> None:
            nonlocal total
            for out in frames:
                arr = out.to_ndarray().reshape(-1)
                total += arr.size
                # Checked before keeping the frame: memory never holds more than the limit.
                if limit is not None and total > limit:
                    raise AudioTooLongError(max_seconds or 0)
                parts.append(arr)

        for frame in container.decode(stream):
            take(resampler.resample(frame))
        take(resampler.resample(None))
        fmt = container.format.name
    except (AudioDecodeError, AudioTooLongError):
        raise
    # A hostile header reaches odd corners of FFmpeg and PyAV (a WAV with 0 bits per sample): any failure
    # to decode is the upload's fault, answered 415, never a 500.
    except (av.error.FFmpegError, ValueError, LookupError, ArithmeticError, AttributeError, TypeError) as exc:
        raise AudioDecodeError(f"the audio could not be decoded ({exc.__class__.__name__})") from None
    finally:
        container.close()
    if not parts:
        raise AudioDecodeError("the file holds no audio samples")
    samples = np.concatenate(parts) if len(parts) > 1 else parts[0]
    parts.clear()
    if samples.dtype != np.float32:
        samples = samples.astype(np.float32)
    return DecodedAudio(samples=samples, sample_rate=target_rate, source_rate=source_rate, source_format=fmt)
