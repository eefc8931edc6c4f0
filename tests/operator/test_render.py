"""Unit tests of the pure renderer: every manifest validates against the real Kubernetes 1.30 schemas
(kubernetes-validate, strict), and the rendered content is what the issue asks for."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from voice_operator import API_VERSION, KIND
from voice_operator.deployconfig import render_deploy_config, stage_layout
from voice_operator.render import HASH_ANNOTATION, render
from voice_operator.spec import InvalidSpec, with_defaults

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
K8S_VERSION = "1.30.0"
Obj = dict[str, Any]


def vg(spec: Obj | None = None, name: str = "demo", ns: str = "team") -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": "0f0e0d0c-0000-4000-8000-000000000001",
            "generation": 3,
        },
        "spec": spec or {},
    }


def by(objs: list[Obj], kind: str, name: str) -> Obj:
    (o,) = [x for x in objs if x["kind"] == kind and x["metadata"]["name"] == name]
    return o


EDGE_CASES: dict[str, Obj] = {
    "defaults-gpu": {},
    "cpu": {"mode": "cpu", "modelCache": {"enabled": False}},
    "cpu-with-cache": {"mode": "cpu"},
    "embedded": {"mode": "cpu", "gateway": {"engine": "embedded"}},
    "two-gpus-existing-claim": {
        "omni": {
            "gpu": {"count": 2, "memoryUtilization": 0.9},
            "maxModelLen": 8192,
            "extraArgs": ["--enforce-eager"],
            "env": [{"name": "VLLM_LOGGING_LEVEL", "value": "DEBUG"}],
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["l40s"]}]}
                        ]
                    }
                }
            },
        },
        "modelCache": {"existingClaim": "shared-hf", "preDownload": True},
    },
    "everything": {
        "tts": {
            "voices": [
                {
                    "name": "anna",
                    "transcript": "Hello there.",
                    "audio": {"secretKeyRef": {"name": "v", "key": "a.wav"}},
                },
                {"name": "bob", "transcript": "Hi.", "audio": {"url": "https://example.com/bob.wav"}},
                {
                    "name": "cy",
                    "transcript": "Hey.",
                    "audio": {"configMapKeyRef": {"name": "c", "key": "c.wav"}},
                },
            ]
        },
        "gateway": {
            "replicas": 3,
            "service": {"type": "LoadBalancer", "port": 9004},
            "resources": {"requests": {"cpu": 1, "memory": "1Gi"}},
            "ingress": {
                "enabled": True,
                "host": "v.example.com",
                "className": "nginx",
                "tlsSecretName": "tls",
                "annotations": {"a": "b"},
            },
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 9},
            "apiKeysSecret": {"name": "keys", "key": "k"},
        },
        "modelCache": {"storageClassName": "fast", "accessMode": "ReadWriteMany", "preDownload": True},
        "audio": {"sampleRate": 16000},
    },
    "no-netpol-zero-replicas": {"networkPolicy": {"enabled": False}, "omni": {"replicas": 0}},
}


def _cases() -> list[tuple[str, Obj]]:
    cases = [(p.name, yaml.safe_load(p.read_text())) for p in EXAMPLES]
    cases += [(k, vg(v)) for k, v in EDGE_CASES.items()]
    return cases


@pytest.mark.parametrize(("case", "resource"), _cases(), ids=[c[0] for c in _cases()])
def test_every_manifest_validates_strictly_against_kubernetes_1_30(case: str, resource: Obj) -> None:
    objs = render(resource)
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        meta = obj["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "voice-gateway-operator"
        assert meta["labels"]["app.kubernetes.io/instance"] == resource["metadata"]["name"]
        (owner,) = meta["ownerReferences"]
        assert owner["kind"] == KIND and owner["controller"] is True and owner["apiVersion"] == API_VERSION
        assert meta["namespace"] == (resource["metadata"].get("namespace") or "default")


def test_examples_exist_for_gpu_and_cpu() -> None:
    modes = {yaml.safe_load(p.read_text())["spec"]["mode"] for p in EXAMPLES}
    assert modes == {"gpu", "cpu"}


def test_gpu_model_servers_command_line_probes_and_security() -> None:
    objs = render(vg())
    omni = by(objs, "Deployment", "demo-omni")
    pod = omni["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    cmd = c["command"] + c["args"]
    assert cmd[:4] == ["vllm", "serve", "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit", "--omni"]
    assert cmd[cmd.index("--port") + 1] == "8000"
    assert "--log-stats" in cmd
    assert cmd[cmd.index("--deploy-config") + 1] == "/etc/vllm-omni/deploy.yaml"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["image"].startswith("ghcr.io/aetherpro/vllm-omni:")
    # the startup probe covers a first download + load of up to 60 minutes, then liveness/readiness
    sp = c["startupProbe"]
    assert sp["httpGet"]["path"] == "/health"
    assert sp["periodSeconds"] * sp["failureThreshold"] >= 3600
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert omni["spec"]["strategy"] == {"type": "Recreate"}
    assert omni["spec"]["progressDeadlineSeconds"] > 3600
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/models/hf", "/tmp", "/dev/shm", "/etc/vllm-omni"} <= mounts
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HF_HOME"] == "/models/hf"


def test_deploy_config_puts_every_stage_on_one_gpu_with_the_seed_memory_shares() -> None:
    spec = with_defaults({})
    omni = render_deploy_config("omni", spec)
    assert [s["devices"] for s in omni["stages"]] == ["0", "0", "0"]
    assert sum(s["gpu_memory_utilization"] for s in omni["stages"]) == pytest.approx(0.65, abs=1e-3)
    tts = render_deploy_config("tts", spec)
    assert [s["devices"] for s in tts["stages"]] == ["0", "0"]
    assert sum(s["gpu_memory_utilization"] for s in tts["stages"]) == pytest.approx(0.10, abs=1e-3)
    assert omni["async_chunk"] is True
    # the ConfigMap the server reads holds exactly this
    cm = by(render(vg()), "ConfigMap", "demo-omni-deploy")
    assert yaml.safe_load(cm["data"]["deploy.yaml"]) == omni


def test_deploy_config_spreads_stages_over_two_gpus_like_vllm_omni_default() -> None:
    layout = stage_layout(3, 2, 0.9, (0.7, 0.22, 0.08))
    assert [d for d, _ in layout] == ["0", "1", "1"]
    assert layout[0][1] == pytest.approx(0.9)
    assert layout[1][1] + layout[2][1] == pytest.approx(0.9, abs=1e-3)


def test_gateway_env_points_at_the_rendered_services() -> None:
    objs = render(vg({"audio": {"sampleRate": 16000}}))
    env = by(objs, "ConfigMap", "demo-gateway-env")["data"]
    assert env["OMNI_SERVICE_URL"] == "http://demo-omni.team.svc:8000"
    assert env["OMNI_WS_URL"] == "ws://demo-omni.team.svc:8000"
    assert env["TTS_SERVICE_URL"] == "http://demo-tts.team.svc:8001"
    assert env["AUDIO_SAMPLE_RATE"] == "16000"
    assert env["VOICE_ENGINE"] == "vllm-omni"
    assert env["HF_HOME"] == "/models/hf"
    assert env["OMNI_MODEL"] == "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit"
    assert env["TTS_MODEL"] == "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
    for comp, port in (("omni", 8000), ("tts", 8001)):
        svc = by(objs, "Service", f"demo-{comp}")
        assert svc["spec"]["ports"][0]["port"] == port
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == comp
    gw = by(objs, "Deployment", "demo-gateway")
    c = gw["spec"]["template"]["spec"]["containers"][0]
    assert c["envFrom"] == [{"configMapRef": {"name": "demo-gateway-env"}}]
    assert c["command"] + c["args"][:1] == ["voice-gateway", "serve"]
    assert c["ports"][0]["containerPort"] == 8004


def test_cpu_mode_runs_engine_server_without_gpus() -> None:
    objs = render(vg({"mode": "cpu"}))
    for comp, port in (("omni", 8000), ("tts", 8001)):
        c = by(objs, "Deployment", f"demo-{comp}")["spec"]["template"]["spec"]["containers"][0]
        assert c["command"] + c["args"] == [
            "voice-gateway",
            "engine-server",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
        ]
        assert c["image"].startswith("ghcr.io/aetherpro/voice-gateway:")
        assert "nvidia.com/gpu" not in str(c.get("resources"))
    assert not [o for o in objs if o["metadata"]["name"].endswith("-deploy")]
    # the GPU checkpoints' names mean nothing to the CPU engines: the gateway discovers their names
    assert "OMNI_MODEL" not in by(objs, "ConfigMap", "demo-gateway-env")["data"]


def test_embedded_engine_has_no_model_servers() -> None:
    objs = render(vg({"mode": "cpu", "gateway": {"engine": "embedded"}}))
    assert [o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"] == ["demo-gateway"]
    env = by(objs, "ConfigMap", "demo-gateway-env")["data"]
    assert env["VOICE_ENGINE"] == "embedded" and "OMNI_SERVICE_URL" not in env


def test_optional_children() -> None:
    objs = render(vg(EDGE_CASES["everything"]))
    ing = by(objs, "Ingress", "demo-gateway")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert ing["spec"]["tls"] == [{"hosts": ["v.example.com"], "secretName": "tls"}]
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] == 9004
    hpa = by(objs, "HorizontalPodAutoscaler", "demo-gateway")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["maxReplicas"] == 9
    # the HPA owns the replica count: the Deployment must not fight it
    assert "replicas" not in by(objs, "Deployment", "demo-gateway")["spec"]
    pdb = by(objs, "PodDisruptionBudget", "demo-gateway")
    assert pdb["apiVersion"] == "policy/v1"
    job = next(o for o in objs if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == [
        "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit",
        "Qwen/Qwen3-TTS-12Hz-0.6B-Base",
    ]
    pvc = by(objs, "PersistentVolumeClaim", "demo-model-cache")
    assert pvc["spec"]["storageClassName"] == "fast" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    np = by(objs, "NetworkPolicy", "demo-model-servers")
    assert np["spec"]["ingress"][0]["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "voice-gateway",
                    "app.kubernetes.io/instance": "demo",
                    "app.kubernetes.io/component": "gateway",
                }
            }
        }
    ]
    # voices reach the gateway in its TTS_VOICES_DIR layout: <voice>.<audio> + <voice>.txt (+ .json)
    env = by(objs, "ConfigMap", "demo-gateway-env")["data"]
    assert env["TTS_VOICES_DIR"] == "/etc/voice-gateway/voices"
    voices = by(objs, "ConfigMap", "demo-voices")["data"]
    assert voices["anna.txt"] == "Hello there." and voices["bob.txt"] == "Hi."
    assert "anna.json" not in voices  # language Auto
    gw_pod = by(objs, "Deployment", "demo-gateway")["spec"]["template"]["spec"]
    (src,) = [v for v in gw_pod["volumes"] if v["name"] == "voices-src"]
    assert {"secret": {"name": "v", "items": [{"key": "a.wav", "path": "anna.wav"}]}} in src["projected"][
        "sources"
    ]
    assert {"configMap": {"name": "c", "items": [{"key": "c.wav", "path": "cy.wav"}]}} in src["projected"][
        "sources"
    ]
    # a URL clip is fetched into the voices directory before the gateway starts
    (init,) = gw_pod["initContainers"]
    assert "bob.wav=https://example.com/bob.wav" in init["command"]
    (gw,) = gw_pod["containers"]
    assert {"name": "voices", "mountPath": "/etc/voice-gateway/voices", "readOnly": True} in gw[
        "volumeMounts"
    ]
    # without URL clips the projected volume is the voices directory itself
    only_cm = render(
        vg(
            {
                "tts": {
                    "voices": [
                        {
                            "name": "x",
                            "transcript": "t",
                            "language": "English",
                            "audio": {"configMapKeyRef": {"name": "c", "key": "x.flac"}},
                        }
                    ]
                }
            }
        )
    )
    pod = by(only_cm, "Deployment", "demo-gateway")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert by(only_cm, "ConfigMap", "demo-voices")["data"]["x.json"] == '{"language": "English"}'
    assert {"configMap": {"name": "c", "items": [{"key": "x.flac", "path": "x.flac"}]}} in pod["volumes"][-1][
        "projected"
    ]["sources"]
    # no PDB for a single replica: it would block every node drain
    assert not [o for o in render(vg()) if o["kind"] == "PodDisruptionBudget"]


def test_config_hash_changes_with_config_and_only_then() -> None:
    def hashes(spec: Obj) -> dict[str, str]:
        return {
            o["metadata"]["name"]: o["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION]
            for o in render(vg(spec))
            if o["kind"] == "Deployment"
        }

    base = hashes({})
    assert hashes({}) == base  # deterministic
    rate = hashes({"audio": {"sampleRate": 16000}})
    assert rate["demo-gateway"] != base["demo-gateway"]  # gateway env ConfigMap changed
    mem = hashes({"omni": {"gpu": {"memoryUtilization": 0.5}}})
    assert mem["demo-omni"] != base["demo-omni"]  # deploy config ConfigMap changed
    assert mem["demo-tts"] == base["demo-tts"]


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"tts": {"port": 8000}}, "spec.tts.port"),
        ({"mode": "cpu", "omni": {"gpu": {"count": 1}}}, "spec.omni.gpu"),
        (
            {"mode": "cpu", "tts": {"resources": {"limits": {"nvidia.com/gpu": 1}}}},
            "spec.tts.resources.limits.nvidia.com/gpu",
        ),
        ({"gateway": {"engine": "tensorrt"}}, "spec.gateway.engine"),
        ({"omni": {"stageMemoryShares": [1, 1]}}, "spec.omni.stageMemoryShares"),
        ({"tts": {"voices": [{"name": "a", "transcript": "x", "audio": {}}]}}, "spec.tts.voices[0].audio"),
        ({"gateway": {"ingress": {"enabled": True}}}, "spec.gateway.ingress.host"),
        (
            {"gateway": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
            "spec.gateway.autoscaling.minReplicas",
        ),
    ],
)
def test_invalid_specs_name_the_field(spec: Obj, field: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        render(vg(spec))
    assert field in [err.field for err in e.value.errors]
    assert field in str(e.value)


def test_invalid_name_is_reported() -> None:
    with pytest.raises(InvalidSpec) as e:
        render(vg({}, name="9-starts-with-digit"))
    assert e.value.errors[0].field == "metadata.name"


def test_defaults_do_not_give_cpu_mode_gpu_fields() -> None:
    spec = with_defaults({"mode": "cpu"})
    assert "gpu" not in spec["omni"] and "gpu" not in spec["tts"]
    gpu = with_defaults({})
    assert gpu["omni"]["gpu"] == {"count": 1, "resourceName": "nvidia.com/gpu", "memoryUtilization": 0.65}
    assert gpu["tts"]["gpu"]["memoryUtilization"] == 0.10


def test_render_does_not_mutate_its_input() -> None:
    r = vg(EDGE_CASES["everything"])
    before = copy.deepcopy(r)
    render(r)
    assert r == before
