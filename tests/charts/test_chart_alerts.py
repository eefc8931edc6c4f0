"""The chart's alert rules, checked and unit-tested by the real promtool (Debian `prometheus`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.chart_tools import (
    DCGM_FAMILIES,
    MONITORING_APIS,
    PROFILES,
    REPO,
    gateway_metric_families,
    metric_names,
    one,
    run,
    template,
    tool,
    values_args,
)

UNIT_TESTS = REPO / "monitoring" / "alerts.test.yaml"
EXPECTED_ALERTS = {
    "VoiceGatewayHigh5xxRatio",
    "VoiceGatewayHighRequestLatencyP95",
    "VoiceGatewayAudioGenerationSlow",
    "VoiceGatewayFirstAudioSlow",
    "VoiceGatewayBackendDown",
    "VoiceGatewayModelServerScrapeDown",
    "VoiceGatewayGPUMemoryHigh",
    "VoiceGatewayNoActiveBackends",
    "VoiceGatewayDown",
}
STATIC_ANNOTATIONS = ("description", "runbook", "runbook_url")


def rendered_groups(profile: str | None = None) -> list[dict[str, Any]]:
    rule = one(template(*values_args(profile), *MONITORING_APIS), "PrometheusRule")
    return rule["spec"]["groups"]


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def write_rules(tmp: Path, groups: list[dict[str, Any]]) -> Path:
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_promtool_check_rules(tmp_path: Path, profile: str | None) -> None:
    path = write_rules(tmp_path, rendered_groups(profile))
    proc = run([tool("promtool"), "check", "rules", str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in proc.stdout


def test_every_alert_has_for_severity_and_runbook() -> None:
    found = alerts(rendered_groups())
    assert set(found) == EXPECTED_ALERTS
    for name, rule in found.items():
        assert rule.get("for"), f"{name} has no `for:`"
        assert rule["labels"]["severity"] in {"critical", "warning"}
        ann = rule["annotations"]
        for key in ("summary", *STATIC_ANNOTATIONS):
            assert ann.get(key), f"{name} lacks annotation {key}"
        assert len(ann["runbook"]) > 120, f"{name}: runbook text too thin"
        assert ann["runbook_url"].endswith("#" + name.lower())


def test_alerts_use_only_metrics_the_gateway_exports() -> None:
    exported = gateway_metric_families() | {"up"} | DCGM_FAMILIES
    for name, rule in alerts(rendered_groups()).items():
        used = metric_names(rule["expr"])
        assert used, name
        assert used <= exported, f"{name} uses {used - exported}"


def test_profile_thresholds_reach_the_rules() -> None:
    gpu = alerts(rendered_groups("gpu"))
    cpu = alerts(rendered_groups("cpu"))
    assert "> 2\n" in gpu["VoiceGatewayHighRequestLatencyP95"]["expr"]
    assert "> 5\n" in cpu["VoiceGatewayHighRequestLatencyP95"]["expr"]
    custom = alerts(
        one(
            template(*MONITORING_APIS, "--set-json", "monitoring.alerts.gpuMemory.threshold=0.9",
                     "--set", "monitoring.alerts.additionalLabels.team=voice"),
            "PrometheusRule",
        )["spec"]["groups"]
    )  # fmt: skip
    assert custom["VoiceGatewayGPUMemoryHigh"]["expr"].endswith(") > 0.9\n")
    assert all(r["labels"]["team"] == "voice" for r in custom.values())


def test_gpu_memory_alert_divides_by_the_exported_total() -> None:
    """The card's memory comes from the gateway (voice_gateway_gpu_memory_total_mb) or DCGM (used + free); the
    deprecated gpuMemory.totalMb adds a fallback only for series without it."""
    nvml = {"voice_gateway_gpu_memory_used_mb", "voice_gateway_gpu_memory_total_mb"}
    for profile in (None, *PROFILES):
        expr = alerts(rendered_groups(profile))["VoiceGatewayGPUMemoryHigh"]["expr"]
        assert metric_names(expr) == nvml | {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}  # "auto"
        assert "unless" not in expr and not re.search(r"/ \d", expr), expr
    for source, names in (("nvml", nvml), ("dcgm", {"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"})):
        groups = one(template(*MONITORING_APIS, "--set", f"monitoring.gpu.source={source}"), "PrometheusRule")
        assert metric_names(alerts(groups["spec"]["groups"])["VoiceGatewayGPUMemoryHigh"]["expr"]) == names


# The deprecated fallback, rendered with totalMb set and run by promtool: an old gateway (no total) is divided
# by the setting, a new one on a bigger card by its own total, whatever the setting says.
FALLBACK_SUITE = {
    "rule_files": ["rules.yaml"],
    "evaluation_interval": "1m",
    "tests": [
        {
            "interval": "1m",
            "input_series": [
                {"series": 'voice_gateway_gpu_memory_used_mb{service="old",gpu="0"}', "values": "45000x10"},
                {"series": 'voice_gateway_gpu_memory_used_mb{service="h100",gpu="0"}', "values": "45000x10"},
                {"series": 'voice_gateway_gpu_memory_total_mb{service="h100",gpu="0"}', "values": "81559x10"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "6m",
                    "alertname": "VoiceGatewayGPUMemoryHigh",
                    "exp_alerts": [{"exp_labels": {"severity": "warning", "service": "old", "gpu": "0"}}],
                }
            ],
        }
    ],
}


def test_deprecated_gpu_total_is_only_a_fallback(tmp_path: Path) -> None:
    groups = one(
        template(*MONITORING_APIS, "--set", "monitoring.alerts.gpuMemory.totalMb=46068"), "PrometheusRule"
    )["spec"]["groups"]
    rule = alerts(groups)["VoiceGatewayGPUMemoryHigh"]
    rule.pop("annotations")  # promtool compares annotations exactly; this suite checks labels only
    write_rules(tmp_path, [{"name": "gpu", "rules": [rule]}])
    (tmp_path / "fallback.test.yaml").write_text(yaml.safe_dump(FALLBACK_SUITE, sort_keys=False))
    proc = run([tool("promtool"), "test", "rules", "fallback.test.yaml"], check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_one_per_alert(tmp_path: Path) -> None:
    groups = rendered_groups()
    found = alerts(groups)
    write_rules(tmp_path, groups)
    suite = yaml.safe_load(UNIT_TESTS.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in suite["tests"]:
        for check in case["alert_rule_test"]:
            name = check["alertname"]
            assert name in found, f"unit test for unknown alert {name}"
            if not check["exp_alerts"]:
                quiet.add(name)
            for exp in check["exp_alerts"]:
                fires.add(name)
                # the static texts come from the rendered rule; the templated summary is written in the test
                ann = exp.setdefault("exp_annotations", {})
                assert "summary" in ann, f"{name}: the unit test must state the rendered summary"
                for key in STATIC_ANNOTATIONS:
                    ann[key] = found[name]["annotations"][key]
    assert fires == EXPECTED_ALERTS, f"alerts never shown firing: {EXPECTED_ALERTS - fires}"
    assert quiet == EXPECTED_ALERTS, f"alerts never shown quiet: {EXPECTED_ALERTS - quiet}"
    test_file = tmp_path / "alerts.test.yaml"
    test_file.write_text(yaml.safe_dump(suite, sort_keys=False))
    proc = run([tool("promtool"), "test", "rules", str(test_file)], check=False, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
