"""The engine contract (tests/engines/contract.py) on the vllm-omni engines (HTTP clients, in this process)
in front of the REAL vLLM-Omni 0.30.0 servers of this package (`real_servers`: Qwen3-TTS and Qwen3-Omni,
shrunken, random weights, CPU), with the package's reference clip registered as the voice.

Random weights speak noise and filler: the contract asserts protocol, never words."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.engines.registry import build_engines
from gateway.settings import load_settings
from tests.engines.contract import *  # noqa: F403 - the contract's tests run here
from tests.engines.contract import Build
from tests.real_vllm_omni.conftest import SEED, RealServers
from tests.vllm_omni_env import OMNI_SERVED_NAME, TTS_SERVED_NAME

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def build(real_servers: RealServers, voices_dir: Path) -> Build:
    settings = load_settings(
        VOICE_ENGINE="vllm-omni",
        OMNI_SERVICE_URL=real_servers.omni.url,
        TTS_SERVICE_URL=real_servers.tts.url,
        OMNI_MODEL=OMNI_SERVED_NAME,
        TTS_MODEL=TTS_SERVED_NAME,
        TTS_VOICES_DIR=str(voices_dir),
        TTS_VOICE_MODE="register",
        TTS_SEED=SEED,
        BACKEND_POLL_INTERVAL=1,
        # CPU stages are slow: a sentence of noise takes seconds, not the GPU's milliseconds.
        BACKEND_READ_TIMEOUT=120,
        BACKEND_TOTAL_TIMEOUT=300,
    )
    return lambda: build_engines(settings)


@pytest.fixture(scope="module")
def contract_timeout() -> float:
    return 300.0
