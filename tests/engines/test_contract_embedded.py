"""The engine contract (tests/engines/contract.py) on the embedded engines, in this process: Piper (in its
worker processes), faster-whisper and SmolLM2, built by the registry as VOICE_ENGINE=embedded builds them."""

from __future__ import annotations

import pytest

from gateway.engines.registry import build_engines
from gateway.settings import load_settings
from tests.engines.contract import *  # noqa: F403 - the contract's tests run here
from tests.engines.contract import Build

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def build() -> Build:
    return lambda: build_engines(load_settings(VOICE_ENGINE="embedded"))


@pytest.fixture(scope="module")
def contract_timeout() -> float:
    return 120.0  # model loading on a busy 2-core machine; a sentence takes well under a second
