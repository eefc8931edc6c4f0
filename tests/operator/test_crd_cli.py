"""The CRD (schema, defaults, printer columns), the RBAC rules and the CLI, without a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from voice_operator import rbac
from voice_operator.crd import build_crd, json_schema
from voice_operator.kinds import CHILD_KINDS
from voice_operator.render import render
from voice_operator.spec import with_defaults

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voice_operator", *args],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=REPO,
        timeout=60,
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_the_crd_schema(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, json_schema())
    render(doc)  # and pass the semantic checks


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "tpu"},
        {"omni": {"replicas": -1}},
        {"tts": {"gpu": {"memoryUtilization": 1.5}}},
        {"omni": {"gpu": {"memoryUtilization": 0}}},
        {"gateway": {"service": {"type": "ExternalName"}}},
        {"tts": {"voices": [{"name": "x"}]}},
    ],
)
def test_schema_rejects_bad_values(bad: dict) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {
                "apiVersion": "voice.aetherpro.ai/v1alpha1",
                "kind": "VoiceGateway",
                "metadata": {"name": "x"},
                "spec": bad,
            },
            json_schema(),
        )


def test_crd_shape() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "voicegateways.voice.aetherpro.ai"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["shortNames"] == ["vgw"]
    (v,) = crd["spec"]["versions"]
    assert v["name"] == "v1alpha1" and v["subresources"] == {"status": {}}
    cols = [c["name"] for c in v["additionalPrinterColumns"]]
    assert cols == ["Mode", "Ready", "Phase", "Endpoint", "Age"]
    status = v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == ["Pending", "Progressing", "Ready", "Degraded", "Invalid"]


def test_schema_defaults_are_the_seed_defaults() -> None:
    spec = with_defaults({})
    assert spec["omni"]["model"] == "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit"
    assert spec["tts"]["model"] == "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
    assert spec["gateway"]["service"]["port"] == 8004
    assert spec["audio"]["sampleRate"] == 24000
    assert spec["mode"] == "gpu"


def test_rbac_covers_every_child_kind_and_nothing_broader() -> None:
    rules = rbac.cluster_rules()
    for r in rules:
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"]
    granted = {
        (g, res, v) for r in rules for g in r["apiGroups"] for res in r["resources"] for v in r["verbs"]
    }
    for k in CHILD_KINDS:
        for verb in ("get", "list", "create", "patch"):
            assert (k.group, k.plural, verb) in granted
        assert ((k.group, k.plural, "delete") in granted) == k.prunable
    assert ("voice.aetherpro.ai", "voicegateways/status", "patch") in granted
    assert rbac.cluster_rules() == rbac.cluster_scoped_rules() + rbac.namespaced_rules()


def test_cli_crd_and_rbac_print_yaml() -> None:
    out = cli("crd")
    assert out.returncode == 0 and yaml.safe_load(out.stdout) == build_crd()
    out = cli("rbac")
    assert out.returncode == 0 and yaml.safe_load(out.stdout) == rbac.cluster_rules()
    out = cli("rbac", "--scope", "namespaced")
    assert yaml.safe_load(out.stdout) == rbac.namespaced_rules()


def test_cli_render_prints_the_manifests() -> None:
    out = cli("render", "-f", str(REPO / "examples" / "voicegateway-cpu.yaml"))
    assert out.returncode == 0, out.stderr
    docs = list(yaml.safe_load_all(out.stdout))
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "ConfigMap", "NetworkPolicy"}
    assert docs == render(yaml.safe_load((REPO / "examples" / "voicegateway-cpu.yaml").read_text()))


def test_cli_render_invalid_names_the_field() -> None:
    bad = (
        "apiVersion: voice.aetherpro.ai/v1alpha1\nkind: VoiceGateway\n"
        "metadata: {name: x}\nspec: {tts: {port: 8000}}\n"
    )
    out = cli("render", "-f", "-", stdin=bad)
    assert out.returncode == 1
    assert "spec.tts.port" in out.stderr
