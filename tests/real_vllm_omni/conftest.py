"""The REAL vLLM-Omni 0.30.0 servers (Qwen3-TTS and Qwen3-Omni, shrunken dummy weights, CPU) and gateways in
front of them, started once for this package and stopped by PID when it ends.

Both servers start together (about 13.5 GB RSS and 3-5 minutes on 2 cores; see
support/vllm_omni_cpu/README.md). Random weights make noise and filler text: the tests assert protocol, bytes,
timing and status, never words.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from gateway.audio.pcm import float_to_pcm16, wav_bytes
from tests.real_vllm_omni_server import OMNI, TTS, RealVllmOmni
from tests.support import ServerProcess

CLIP_TEXT = "The quick brown fox jumps over the lazy dog."
SEED = "7"


@dataclass(frozen=True)
class RealServers:
    tts: RealVllmOmni
    omni: RealVllmOmni


def reference_clip(seconds: float = 3.0, rate: int = 24000) -> bytes:
    """A voiced-like reference clip (a 120 Hz harmonic series with syllable-rate envelope) as a WAV: the
    speaker encoder runs on it for real; what it sounds like does not matter to random weights."""
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * math.pi * 120 * k * t) / k for k in range(1, 12))
    envelope = 0.5 * (1 + np.sin(2 * math.pi * 4 * t))
    samples = (0.25 * voice * envelope / np.max(np.abs(voice))).astype(np.float32)
    return wav_bytes(float_to_pcm16(samples), rate)


@pytest.fixture(scope="package")
def real_servers() -> Iterator[RealServers]:
    # A developer can keep servers running between runs (they take minutes to start):
    # VGW_REAL_TTS_URL / VGW_REAL_OMNI_URL name them. CI always starts its own.
    tts_url, omni_url = os.environ.get("VGW_REAL_TTS_URL"), os.environ.get("VGW_REAL_OMNI_URL")
    if tts_url and omni_url:
        yield RealServers(RealVllmOmni.attached(TTS, tts_url), RealVllmOmni.attached(OMNI, omni_url))
        return
    tts, omni = RealVllmOmni(TTS), RealVllmOmni(OMNI)
    try:
        tts.start()
        omni.start()
        with ThreadPoolExecutor(2) as pool:
            for fut in [pool.submit(tts.wait_ready), pool.submit(omni.wait_ready)]:
                fut.result()
        yield RealServers(tts, omni)
    finally:
        tts.stop()
        omni.stop()


def _voices(root: Path, name: str) -> Path:
    (root / f"{name}.wav").write_bytes(reference_clip())
    (root / f"{name}.txt").write_text(CLIP_TEXT + "\n")
    (root / f"{name}.json").write_text(f'{{"language": "en", "description": "{name} (reference clip)"}}')
    return root


@pytest.fixture(scope="package")
def voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`narrator`: registered with the TTS server by `real_gateway`."""
    return _voices(tmp_path_factory.mktemp("real-voices"), "narrator")


@pytest.fixture(scope="package")
def inline_voices_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`reader`: only ever sent inline (`ref_audio` data URL) by `inline_gateway`, never uploaded."""
    return _voices(tmp_path_factory.mktemp("inline-voices"), "reader")


def start_gateway(servers: RealServers, voices: Path | None, **extra: str) -> ServerProcess:
    env = {
        "VOICE_ENGINE": "vllm-omni",
        "OMNI_SERVICE_URL": servers.omni.url,
        "TTS_SERVICE_URL": servers.tts.url,
        "TTS_VOICES_DIR": str(voices) if voices else "",
        "TTS_SEED": SEED,
        "BACKEND_POLL_INTERVAL": "1",
        # CPU stages are slow: a sentence of noise takes seconds, not the GPU's milliseconds.
        "BACKEND_READ_TIMEOUT": "120",
        "BACKEND_TOTAL_TIMEOUT": "300",
        **extra,
    }
    return ServerProcess("serve", env=env)


@contextlib.contextmanager
def gateway_in_front(
    servers: RealServers, voices: Path | None, ready_path: str = "/health", **extra: str
) -> Iterator[ServerProcess]:
    """A gateway started by `start_gateway`, answering 200 on `ready_path`, stopped on the way out."""
    server = start_gateway(servers, voices, **extra)
    try:
        server.wait_ready(timeout=120, path=ready_path)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def real_gateway(real_servers: RealServers, voices_dir: Path) -> Iterator[ServerProcess]:
    """VOICE_ENGINE=vllm-omni, voices registered with the TTS server (`TTS_VOICE_MODE=register`)."""
    with gateway_in_front(real_servers, voices_dir, TTS_VOICE_MODE="register") as server:
        yield server


@pytest.fixture(scope="package")
def inline_gateway(real_servers: RealServers, inline_voices_dir: Path) -> Iterator[ServerProcess]:
    """The same, with the clip sent inline as a `ref_audio` data URL on every request."""
    with gateway_in_front(real_servers, inline_voices_dir, TTS_VOICE_MODE="inline") as server:
        yield server
