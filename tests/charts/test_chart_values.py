"""values.schema.json rejects wrong values with a clear message; every value is documented in the README."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.charts.chart_tools import CHART, PROFILES, helm

# (--set arguments, the message helm must print). helm validates against values.schema.json before rendering.
WRONG_VALUES = [
    (
        ("images.gateway.pullPolicy=Sometimes",),
        'images.gateway.pullPolicy must be one of the following: "Always"',
    ),
    (("monitoring.serviceMonitor.enabled=maybe",), "monitoring.serviceMonitor.enabled"),
    (("voiceGateway.spec.mode=tpu",), 'voiceGateway.spec.mode must be one of the following: "gpu", "cpu"'),
    (("operator.ports.metrics=70000",), "operator.ports.metrics: Must be less than or equal to 65535"),
    (("operator.bogus=1",), "Additional property bogus is not allowed"),
    (
        ("monitoring.alerts.errorRatio.threshold=5",),
        "monitoring.alerts.errorRatio.threshold: Must be less than",
    ),
    (
        ("monitoring.alerts.backendDown.for=2 minutes",),
        "monitoring.alerts.backendDown.for: Does not match pattern",
    ),
    (("images.operator.digest=latest",), "images.operator.digest: Does not match pattern"),
    (("operator.watchNamespaces={Team_A}",), "operator.watchNamespaces.0: Does not match pattern"),
    (("monitoring.alerts.gpuMemory.severity=page",), "monitoring.alerts.gpuMemory.severity must be one of"),
    (  # MiB, not GB: a small card size would make the deprecated fallback fire on every old gateway
        ("monitoring.alerts.gpuMemory.totalMb=46",),
        "monitoring.alerts.gpuMemory.totalMb: Must validate at least one schema",
    ),
]


@pytest.mark.parametrize(("sets", "message"), WRONG_VALUES, ids=[s[0][0].split("=")[0] for s in WRONG_VALUES])
def test_wrong_value_is_rejected_with_a_clear_message(sets: tuple[str, ...], message: str) -> None:
    args = [a for s in sets for a in ("--set", s)]
    proc = helm("template", "x", "{chart}", *args, check=False)
    assert proc.returncode != 0, f"{sets} was accepted"
    assert "values don't meet the specifications of the schema" in proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize("path", [CHART / "values.yaml", *PROFILES.values()], ids=lambda p: p.name)
def test_shipped_values_files_pass_the_schema(path: object) -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(base, schema)
    helm("lint", "--strict", "{chart}", "-f", str(path))


def _leaves(node: object, prefix: str = "") -> list[str]:
    opaque = {
        "voiceGateway.spec",
        "operator.resources",
        "operator.podSecurityContext",
        "operator.securityContext",
    }
    if (
        isinstance(node, dict)
        and node
        and prefix.rstrip(".") not in opaque
        and not prefix.endswith("selector.")
    ):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def test_every_value_is_documented_in_the_readme_table() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [k for k in _leaves(values) if f"| `{k}` |" not in readme]
    assert not missing, f"values missing from the README table: {missing}"
    # and every alert has its runbook section (the runbook_url anchors point there)
    rules = (CHART / "files" / "alerts.rules.yaml").read_text()
    for line in rules.splitlines():
        if line.strip().startswith("- alert:"):
            name = line.split(":", 1)[1].strip()
            assert f"### {name}\n" in readme, f"no runbook section for {name}"
