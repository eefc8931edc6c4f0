"""Audio on the Realtime wire: base64 strings carrying PCM16 at 24 kHz or G.711 (μ-law / A-law) at 8 kHz.

The conversation core works in PCM s16le at the gateway rate; these codecs sit at the edge. The G.711
tables are the ITU-T formulas, vectorised: telephony bridges (Twilio and friends) send μ-law, and a codec
that converts 160 bytes at a time must carry resampler state across calls, hence the stream objects.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import numpy as np
import soxr

from gateway.audio.pcm import SAMPLE_WIDTH


class AudioPayloadError(ValueError):
    """The client's audio string is not valid for the session's format."""


@dataclass(frozen=True)
class AudioFormat:
    """One wire format. `name` is the beta spelling, `mime` the GA one."""

    name: str  # "pcm16" | "g711_ulaw" | "g711_alaw"
    mime: str  # "audio/pcm" | "audio/pcmu" | "audio/pcma"
    rate: int

    def ga(self) -> dict[str, object]:
        return {"type": self.mime, "rate": self.rate} if self.name == "pcm16" else {"type": self.mime}


PCM16 = AudioFormat("pcm16", "audio/pcm", 24000)
G711_ULAW = AudioFormat("g711_ulaw", "audio/pcmu", 8000)
G711_ALAW = AudioFormat("g711_alaw", "audio/pcma", 8000)
FORMATS = {f.name: f for f in (PCM16, G711_ULAW, G711_ALAW)} | {
    f.mime: f for f in (PCM16, G711_ULAW, G711_ALAW)
}


def decode_base64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AudioPayloadError(f"audio is not valid base64: {exc}") from None


def encode_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- G.711 ---------------------------------------------------------------------------------------------

_BIAS = 0x84
_CLIP = 32635


def _ulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + _BIAS) << exponent
    return np.where(sign != 0, _BIAS - magnitude, magnitude - _BIAS).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


_ULAW_TABLE = _ulaw_decode_table()
_ALAW_TABLE = _alaw_decode_table()


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), _CLIP) + _BIAS
    exponent = np.clip(np.floor(np.log2(magnitude)).astype(np.int32) - 7, 0, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)


def alaw_encode(pcm: np.ndarray) -> np.ndarray:
    x = pcm.astype(np.int32)
    sign = np.where(x >= 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32767)
    exponent = np.clip(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int32) - 7, 0, 7)
    mantissa = np.where(exponent == 0, magnitude >> 4, magnitude >> (exponent + 3)) & 0x0F
    return ((sign | (exponent << 4) | mantissa) ^ 0x55).astype(np.uint8)


# -- streams -------------------------------------------------------------------------------------------


class InputDecoder:
    """Wire bytes -> PCM s16le at the gateway rate, keeping resampler state between appends."""

    def __init__(self, fmt: AudioFormat, gateway_rate: int) -> None:
        self.format = fmt
        self.gateway_rate = gateway_rate
        self._resampler = (
            soxr.ResampleStream(fmt.rate, gateway_rate, 1, dtype="int16", quality="HQ")
            if fmt.rate != gateway_rate
            else None
        )

    def decode(self, data: bytes) -> bytes:
        if self.format.name == "pcm16":
            if len(data) % SAMPLE_WIDTH:
                raise AudioPayloadError(
                    f"pcm16 audio must hold whole 16-bit samples; got {len(data)} bytes (odd length)"
                )
            samples = np.frombuffer(data, dtype="<i2")
        else:
            table = _ULAW_TABLE if self.format.name == "g711_ulaw" else _ALAW_TABLE
            samples = table[np.frombuffer(data, dtype=np.uint8)]
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        return samples.astype("<i2", copy=False).tobytes()


class OutputEncoder:
    """PCM s16le at the gateway rate -> wire bytes for the session's output format."""

    def __init__(self, fmt: AudioFormat, gateway_rate: int) -> None:
        self.format = fmt
        self._resampler = (
            soxr.ResampleStream(gateway_rate, fmt.rate, 1, dtype="int16", quality="HQ")
            if fmt.rate != gateway_rate
            else None
        )

    def encode(self, pcm: bytes) -> bytes:
        if self._resampler is None and self.format.name == "pcm16":
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples)
        if self.format.name == "pcm16":
            return samples.astype("<i2", copy=False).tobytes()
        encode = ulaw_encode if self.format.name == "g711_ulaw" else alaw_encode
        return encode(samples).tobytes()


def wire_ms(num_bytes: int, fmt: AudioFormat) -> float:
    """Duration of `num_bytes` of wire audio in `fmt`."""
    per_sample = SAMPLE_WIDTH if fmt.name == "pcm16" else 1
    return num_bytes / per_sample * 1000 / fmt.rate
