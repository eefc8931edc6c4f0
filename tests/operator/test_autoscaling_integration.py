"""Gateway autoscaling on the REAL control plane (scripts/k8s, v1.20: autoscaling/v2beta2, no KEDA): the
operator picks the HPA version the cluster serves, the apiserver accepts it with its owner reference, the
real HPA controller acts on it, the drain hook and grace period land in the gateway's pods, and the
VoiceGateway's status shows the autoscaler."""

from __future__ import annotations

from typing import Any

import pytest

from tests.operator.harness import Api, OperatorProcess, wait_for

pytestmark = pytest.mark.k8s
Obj = dict[str, Any]
HPA = "/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers/demo-gateway"
DEPLOYMENT = "/apis/apps/v1/namespaces/{ns}/deployments/demo-gateway"
AUTO = {"enabled": True, "minReplicas": 2, "maxReplicas": 5, "targetSessionsPerPod": 8}


def test_session_autoscaler_is_accepted_owned_acted_on_and_reported(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    spec = {
        "mode": "cpu",
        "modelCache": {"enabled": False},
        "gateway": {"autoscaling": AUTO, "drainSeconds": 60, "shutdownGraceSeconds": 30},
    }
    vg = admin.create_vg(ns, "demo", spec)

    hpa = wait_for(lambda: admin.get(HPA.format(ns=ns)), 20, 0.1, "the v2beta2 HPA")
    (ref,) = hpa["metadata"]["ownerReferences"]
    assert ref["uid"] == vg["metadata"]["uid"] and ref["kind"] == "VoiceGateway" and ref["controller"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "voice_gateway_active_streams"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "8"}

    # the Deployment leaves replicas to the HPA; kube-controller-manager's HPA controller raises it to
    # minReplicas (that needs no metrics), and the operator's next apply does not take it back
    def scaled() -> Obj | None:
        dep = admin.get(DEPLOYMENT.format(ns=ns))
        return dep if dep and dep["spec"].get("replicas") == 2 else None

    dep = wait_for(scaled, 60, 0.5, "the HPA controller to scale the gateway to minReplicas")
    pod = dep["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60 + 30
    hook = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert hook[:2] == ["python3", "-c"] and hook[3:5] == ["8004", "60"]

    def reported() -> Obj | None:
        st = (admin.vg(ns, "demo") or {}).get("status") or {}
        scaler = st.get("autoscaler") or {}
        return st if scaler.get("found") and scaler.get("desiredReplicas") == 2 else None

    st = wait_for(reported, 30, 0.2, "status.autoscaler with the HPA's replicas")
    assert st["autoscaler"]["kind"] == "autoscaling/v2beta2 HorizontalPodAutoscaler"
    assert st["autoscaler"]["name"] == "demo-gateway"
    assert not [k for k in st["unservedKinds"] if "autoscaling" in k]
    assert st["components"]["gateway"]["desired"] == 2
    assert wait_for(scaled, 10, 0.5, "replicas kept at 2 across resyncs")

    # autoscaling off: the HPA is pruned, status forgets it, the spec's replica count is back
    admin.merge_patch(
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/demo",
        {"spec": {"gateway": {"autoscaling": {"enabled": False}, "replicas": 1}}},
    )
    wait_for(lambda: admin.get(HPA.format(ns=ns)) is None, 20, 0.2, "the HPA pruned")
    wait_for(
        lambda: "autoscaler" not in ((admin.vg(ns, "demo") or {}).get("status") or {}), 20, 0.2, "status"
    )
    wait_for(
        lambda: (admin.get(DEPLOYMENT.format(ns=ns)) or {}).get("spec", {}).get("replicas") == 1,
        20,
        0.2,
        "replicas from the spec",
    )
    assert operator.forbidden_lines() == []
