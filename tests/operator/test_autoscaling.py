"""Gateway autoscaling on open sessions (issue 20 §4): the rendered autoscaler for each kind of cluster
(validated against the real Kubernetes schemas where they still exist), and the preStop drain run for real
against a gateway holding an open /voice conversation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from voice_operator.autoscaling import HPA_V2, HPA_V2BETA2, KEDA, termination_grace
from voice_operator.render import render

from tests.gateway.voice_client import VoiceClient
from tests.operator.test_render import by, vg
from tests.support import ServerProcess

Obj = dict[str, Any]
AUTO = {"gateway": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6}}}


def _scaler(objs: list[Obj]) -> Obj:
    (o,) = [x for x in objs if x["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
    return o


def test_hpa_targets_open_sessions_per_pod_not_cpu() -> None:
    objs = render(vg(AUTO))
    hpa = _scaler(objs)
    kubernetes_validate.validate(hpa, "1.30.0", strict=True)
    assert hpa["apiVersion"] == HPA_V2
    assert hpa["metadata"]["ownerReferences"][0]["kind"] == "VoiceGateway"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "demo-gateway",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    (metric,) = hpa["spec"]["metrics"]  # sessions only: CPU does not say when a gateway is full
    assert metric == {
        "type": "Pods",
        "pods": {
            "metric": {"name": "voice_gateway_active_streams"},
            "target": {"type": "AverageValue", "averageValue": "16"},
        },
    }
    # scale-down is slow and one pod at a time (each leaving pod drains its conversations)
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 120}
    ]
    assert "replicas" not in by(objs, "Deployment", "demo-gateway")["spec"]


def test_gateway_metric_name_is_the_one_the_gateway_exports() -> None:
    from gateway.metrics import Metrics

    names = {m.name for m in Metrics().registry.collect()}
    assert "voice_gateway_active_streams" in names


def test_optional_cpu_target_and_custom_metric() -> None:
    spec = {
        "gateway": {
            "autoscaling": {
                "enabled": True,
                "targetSessionsPerPod": 5,
                "metricName": "gateway_sessions",
                "targetCPUUtilizationPercentage": 80,
            }
        }
    }
    hpa = _scaler(render(vg(spec)))
    kubernetes_validate.validate(hpa, "1.30.0", strict=True)
    pods, cpu = hpa["spec"]["metrics"]
    assert pods["pods"]["metric"]["name"] == "gateway_sessions"
    assert pods["pods"]["target"]["averageValue"] == "5"
    assert cpu["resource"]["target"]["averageUtilization"] == 80


def test_a_1_20_cluster_gets_autoscaling_v2beta2() -> None:
    hpa = _scaler(render(vg(AUTO), apis={HPA_V2BETA2}))
    assert hpa["apiVersion"] == HPA_V2BETA2
    # same body as v2 (v2beta2 has Pods metrics and behavior since 1.18); 1.30 schemas lack v2beta2, so
    # check the body against v2's and let the integration test show a 1.20 apiserver accepts it
    kubernetes_validate.validate({**hpa, "apiVersion": HPA_V2}, "1.30.0", strict=True)
    assert _scaler(render(vg(AUTO), apis={HPA_V2, HPA_V2BETA2}))["apiVersion"] == HPA_V2


def test_keda_scaled_object_only_when_the_cluster_serves_keda() -> None:
    objs = render(vg(AUTO), apis={HPA_V2, KEDA})
    so = _scaler(objs)
    assert so["apiVersion"] == KEDA and so["kind"] == "ScaledObject"
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]  # KEDA makes its own HPA
    assert so["spec"]["scaleTargetRef"]["name"] == "demo-gateway"
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (2, 6)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "16"
    assert trigger["metadata"]["query"] == (
        'sum(voice_gateway_active_streams{namespace="team",pod=~"demo-gateway-[a-z0-9]+-[a-z0-9]+"})'
    )
    assert trigger["metadata"]["serverAddress"].startswith("http://")
    # KEDA installed but not wanted for this resource: the HPA
    off = {"gateway": {"autoscaling": {**AUTO["gateway"]["autoscaling"], "keda": {"enabled": False}}}}
    assert _scaler(render(vg(off), apis={HPA_V2, KEDA}))["kind"] == "HorizontalPodAutoscaler"
    assert not [o for o in render(vg(), apis={HPA_V2, KEDA}) if o["kind"] == "ScaledObject"]


def test_termination_grace_covers_drain_and_the_gateways_shutdown_grace() -> None:
    from gateway.settings import Settings

    spec = {"gateway": {"drainSeconds": 120, "shutdownGraceSeconds": 40}}
    objs = render(vg(spec))
    pod = by(objs, "Deployment", "demo-gateway")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == termination_grace(120, 40) >= 120 + 40
    assert by(objs, "ConfigMap", "demo-gateway-env")["data"]["SHUTDOWN_GRACE_SECONDS"] == "40"
    # defaults: the gateway's own SHUTDOWN_GRACE_SECONDS default fits inside the pod's grace
    default_pod = by(render(vg()), "Deployment", "demo-gateway")["spec"]["template"]["spec"]
    gateway_default = Settings.model_fields["shutdown_grace_seconds"].default
    assert default_pod["terminationGracePeriodSeconds"] >= 300 + gateway_default
    (gw,) = pod["containers"]
    cmd = gw["lifecycle"]["preStop"]["exec"]["command"]
    assert cmd[0] == "python3" and cmd[3:5] == ["8004", "120"]


def _drain_command(port: int, budget: float) -> list[str]:
    pod = by(render(vg()), "Deployment", "demo-gateway")["spec"]["template"]["spec"]
    cmd = list(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"])
    # the rendered hook, with this machine's python and the test gateway's port; short settle/poll times
    return [sys.executable, *cmd[1:3], str(port), str(budget), "0.2", "0.2"]


def test_prestop_drain_waits_for_an_open_conversation(gateway: ServerProcess) -> None:
    async def scenario() -> str:
        client = await VoiceClient.connect(gateway.ws_url)
        drain = await asyncio.create_subprocess_exec(
            *_drain_command(gateway.port, 60),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            with pytest.raises(TimeoutError):  # still waiting while the conversation is open
                await asyncio.wait_for(asyncio.shield(drain.wait()), 3)
            await client.ws.close()
            # ends once the conversation is over, long before its 60 s budget
            assert await asyncio.wait_for(drain.wait(), 20) == 0
        finally:
            if drain.returncode is None:
                drain.kill()
                await drain.wait()
        assert drain.stdout is not None
        return (await drain.stdout.read()).decode()

    out = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert "drain: 1 open sessions" in out and out.rstrip().endswith("drain: 0 open sessions"), out


def test_prestop_drain_is_bounded_by_its_budget(gateway: ServerProcess) -> None:
    async def scenario() -> float:
        client = await VoiceClient.connect(gateway.ws_url)
        try:
            t0 = time.monotonic()
            proc = await asyncio.create_subprocess_exec(*_drain_command(gateway.port, 2))
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            return time.monotonic() - t0
        finally:
            await client.ws.close()

    took = asyncio.run(scenario())
    assert 1.5 < took < 20  # waited for the open session, but no longer than its budget (plus a poll)


def test_prestop_drain_ends_at_once_when_the_gateway_is_gone() -> None:
    from tests.support import free_port

    t0 = time.monotonic()
    assert subprocess.run(_drain_command(free_port(), 60), timeout=30).returncode == 0
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("apis", [None, {HPA_V2BETA2}, {HPA_V2, KEDA}])
def test_autoscaler_has_the_owner_reference(apis: set[str] | None) -> None:
    (owner,) = _scaler(render(vg(AUTO), apis=apis))["metadata"]["ownerReferences"]
    assert owner["controller"] is True and owner["name"] == "demo"


def test_status_reports_the_autoscaler_the_plan_wants() -> None:
    from voice_operator.status import Observed, compute_status

    kind = "autoscaling/v2beta2 HorizontalPodAutoscaler"
    hpa = {"status": {"currentReplicas": 2, "desiredReplicas": 3}}
    seen = Observed(
        deployments={"gateway": None}, cache_mode="emptydir", autoscaler_kind=kind, autoscaler=hpa
    )
    assert compute_status(vg(), seen)["autoscaler"] == {
        "kind": kind,
        "name": "demo-gateway",
        "found": True,
        "currentReplicas": 2,
        "desiredReplicas": 3,
    }
    missing = Observed(deployments={"gateway": None}, cache_mode="emptydir", autoscaler_kind=kind)
    assert compute_status(vg(), missing)["autoscaler"] == {
        "kind": kind,
        "name": "demo-gateway",
        "found": False,
    }
    assert "autoscaler" not in compute_status(
        vg(), Observed(deployments={"gateway": None}, cache_mode="emptydir")
    )


def test_scaled_object_validates_against_kedas_crd_schema() -> None:
    import jsonschema

    # KEDA's own CRD (kedacore/keda config/crd/bases/keda.sh_scaledobjects.yaml, Apache-2.0)
    crd = yaml.safe_load((Path(__file__).parent / "data" / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    so = _scaler(render(vg(AUTO), apis={HPA_V2, KEDA}))
    assert f"{crd['spec']['group']}/{version['name']}" == so["apiVersion"] == KEDA
    jsonschema.validate({k: v for k, v in so.items() if k != "metadata"}, schema)
    bad = {**so, "spec": {**so["spec"], "minReplicaCount": "two"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({k: v for k, v in bad.items() if k != "metadata"}, schema)
