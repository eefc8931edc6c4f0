"""The model servers' KV-cache panel reads the family the real vLLM under vLLM-Omni 0.30.0 defines.

The live dashboard test cannot produce it (the CPU engine-server has no KV cache), so the name is checked in
the real vLLM source of the project's vLLM-Omni test virtualenv (tests/vllm_omni_env.py): vLLM's
PrometheusStatLogger, which vLLM-Omni's OmniPrometheusStatLogger wraps, is what fills the servers' /metrics.
"""

from __future__ import annotations

import re

import pytest

from tests.charts.prom import targets
from tests.vllm_omni_env import VENV

KV_NAMES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")


def _vllm_source(relative: str) -> str:
    found = sorted(VENV.glob(f"lib/python3.*/site-packages/{relative}"))
    if not found:
        pytest.fail(f"{relative} not in {VENV}: run `bash scripts/setup-test-env.sh`")
    return found[0].read_text()


def test_kv_cache_panel_reads_the_name_real_vllm_exports() -> None:
    loggers = _vllm_source("vllm/v1/metrics/loggers.py")
    defined = set(re.findall(r'name="(vllm:[a-z0-9_:]+)"', loggers))
    assert "vllm:kv_cache_usage_perc" in defined
    # the older name is only a fallback for older vLLM releases: this one no longer defines it
    assert "vllm:gpu_cache_usage_perc" not in defined
    (expr,) = [e for t, e in targets("model-servers") if t.startswith("model-servers: KV cache usage")]
    assert all(name in expr for name in KV_NAMES), expr
    # vLLM-Omni wraps that logger (its families gain stage/replica labels; the names stay)
    assert "class OmniPrometheusStatLogger(PrometheusStatLogger)" in _vllm_source(
        "vllm_omni/metrics/stat_logger.py"
    )
