"""Helpers for the chart tests: the real helm/promtool/prometheus binaries and cached `helm template` runs.

Missing tools FAIL the tests (never skip): `bash scripts/setup-test-env.sh` installs them
(scripts/setup.d/40-helm.sh, 45-prometheus.sh).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "voice-gateway"
PROFILES = {"gpu": CHART / "values-gpu.yaml", "cpu": CHART / "values-cpu.yaml"}
MONITORING_APIS = (
    "--api-versions",
    "monitoring.coreos.com/v1",
    "--api-versions",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "--api-versions",
    "monitoring.coreos.com/v1/PrometheusRule",
)
Obj = dict[str, Any]


def tool(name: str) -> str:
    """Path of a required binary: the project's tool cache first, then PATH. Missing -> test failure."""
    cache = (
        Path(os.environ.get("VOICE_GATEWAY_TOOLS", Path.home() / ".cache" / "voice-gateway-tools")) / "bin"
    )
    candidate = cache / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"`{name}` not found (looked in {cache} and PATH): run `bash scripts/setup-test-env.sh`")


def run(
    cmd: list[str], check: bool = True, cwd: Path = REPO, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def helm(*args: str, check: bool = True, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return run([tool("helm"), *[a.replace("{chart}", str(chart)) for a in args]], check=check)


@functools.lru_cache(maxsize=64)
def _template(args: tuple[str, ...], release: str, namespace: str) -> str:
    return helm("template", release, "{chart}", "--namespace", namespace, "--include-crds", *args).stdout


def template(*args: str, release: str = "voice-gateway", namespace: str = "voice") -> list[Obj]:
    """`helm template --include-crds` -> the list of objects (cached per argument list)."""
    text = _template(tuple(args), release, namespace)
    return [d for d in yaml.safe_load_all(text) if d]


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o.get("kind") == kind]


def one(objs: list[Obj], kind: str, name_contains: str = "") -> Obj:
    found = [o for o in of_kind(objs, kind) if name_contains in o["metadata"]["name"]]
    assert len(found) == 1, (
        f"expected one {kind} matching {name_contains!r}, got {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def values_args(profile: str | None) -> tuple[str, ...]:
    return () if profile is None else ("-f", str(PROFILES[profile]))


def load_crd() -> Obj:
    text = (CHART / "crds" / "voicegateways.voice.aetherpro.ai.yaml").read_text()
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert len(docs) == 1
    return docs[0]


def crd_json_schema(crd: Obj) -> Obj:
    """The CRD's openAPIV3Schema as JSON Schema: Kubernetes extensions dropped, boolean exclusiveMinimum
    (OpenAPI 3.0) turned into the numeric form, preserve-unknown-fields objects left open."""

    def conv(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: conv(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
            if out.get("exclusiveMinimum") is True:
                out["exclusiveMinimum"] = out.pop("minimum")
            elif out.get("exclusiveMinimum") is False:
                out.pop("exclusiveMinimum")
            return out
        if isinstance(node, list):
            return [conv(v) for v in node]
        return node

    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return conv(version["schema"]["openAPIV3Schema"])


METRIC_RE = re.compile(
    r"\b(voice_gateway_[a-z0-9_]+|voice_operator_[a-z0-9_]+|vllm(?:_omni)?:[a-z0-9_:]+|DCGM_FI_[A-Z0-9_]+|up)\b"
)

# NVIDIA dcgm-exporter's families the chart reads (its default counters: DCGM field names, MiB and %), for
# GPU figures in a cluster, where the gateway pod has no GPU.
DCGM_FAMILIES = {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_GPU_UTIL"}


def gateway_metric_families() -> set[str]:
    """The metric names the gateway really exports (its own registry, with histogram/counter suffixes)."""
    from gateway.metrics import Metrics

    return _names(Metrics().registry.collect())


# Families only a real vLLM-Omni exports: the CPU engine-server has no KV cache. Dashboards may read them; the
# live test cannot produce them (tests/real_vllm_omni/test_metrics_names.py finds them on the real server).
# vllm:kv_cache_usage_perc is vLLM 0.30's name (vllm/v1/metrics/loggers.py, which vLLM-Omni 0.30's
# OmniPrometheusStatLogger wraps); vllm:gpu_cache_usage_perc the name older vLLM releases export.
VLLM_OMNI_ONLY = {"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"}


def engine_server_metric_families() -> set[str]:
    """The vLLM-Omni metric names `voice-gateway engine-server` (cpu mode model servers) exports."""
    from gateway.engine_server.app import ServerMetrics

    return _names(ServerMetrics("omni", "tts").registry.collect())


def operator_metric_families() -> set[str]:
    """The metric names the operator exports (voice_operator.metrics on the default registry)."""
    import prometheus_client
    import voice_operator.metrics  # noqa: F401  (registers the families)

    fams = [f for f in prometheus_client.REGISTRY.collect() if f.name.startswith("voice_operator_")]
    return _names(fams)


def _names(families: Any) -> set[str]:
    names: set[str] = set()
    for family in families:
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
    return names


def metric_names(expr: str) -> set[str]:
    return set(METRIC_RE.findall(expr))
