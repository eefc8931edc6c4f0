"""The wire-fidelity cases of tests/engine_server/test_wire_fidelity.py, unchanged, against the REAL
vLLM-Omni 0.30.0 servers: the engine-server (the CPU stand-in the operator runs in `cpu` mode) and the real
thing answer alike."""

from __future__ import annotations

import pytest

from tests.engine_server.test_wire_fidelity import OMNI_CASES, SPEECH_CASES, Case, WireServer, run
from tests.real_vllm_omni.conftest import RealServers


@pytest.mark.parametrize("case", SPEECH_CASES, ids=[c.id for c in SPEECH_CASES])
def test_real_tts_server_answers_as_the_cases_say(real_servers: RealServers, case: Case) -> None:
    run(WireServer(real_servers.tts.url, real_servers.tts.model), case)


@pytest.mark.parametrize("case", OMNI_CASES, ids=[c.id for c in OMNI_CASES])
def test_real_omni_server_answers_as_the_cases_say(real_servers: RealServers, case: Case) -> None:
    run(WireServer(real_servers.omni.url, real_servers.omni.model), case)
