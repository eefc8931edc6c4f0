"""KEDA on the REAL control plane: once the cluster serves keda.sh/v1alpha1 (KEDA's own ScaledObject CRD
installed), the operator renders a ScaledObject instead of the HPA; the apiserver accepts it with its owner
reference, the status reports it, and `keda.enabled: false` swaps it back for the HPA. Its own module: the
operator caches discovery, so KEDA is installed before this operator sees its first resource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.harness import Api, OperatorProcess, wait_for

pytestmark = pytest.mark.k8s
Obj = dict[str, Any]
# kedacore/keda config/crd/bases/keda.sh_scaledobjects.yaml (Apache-2.0)
KEDA_CRD = Path(__file__).parent / "data" / "keda.sh_scaledobjects.yaml"
SO = "/apis/keda.sh/v1alpha1/namespaces/{ns}/scaledobjects/demo-gateway"
HPA = "/apis/autoscaling/v2beta2/namespaces/{ns}/horizontalpodautoscalers/demo-gateway"
AUTO = {"enabled": True, "minReplicas": 1, "maxReplicas": 4, "targetSessionsPerPod": 10}


def _without_cel(node: Any) -> Any:
    """KEDA's CEL rules (x-kubernetes-validations) need 1.25; the 1.20 plane refuses the key."""
    if isinstance(node, dict):
        return {k: _without_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [_without_cel(v) for v in node]
    return node


def _install_keda_crd(admin: Api) -> None:
    crd = _without_cel(yaml.safe_load(KEDA_CRD.read_text()))
    r = admin.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}", crd)
    assert r.status_code in (200, 201), r.text

    def served() -> bool:
        disc = admin.get("/apis/keda.sh/v1alpha1") or {}
        return any(res["name"] == "scaledobjects" for res in disc.get("resources", []))

    wait_for(served, 30, 0.2, "keda.sh/v1alpha1 served")


def test_keda_scaled_object_replaces_the_hpa_where_keda_is_served(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    _install_keda_crd(admin)
    vg = admin.create_vg(
        ns, "demo", {"mode": "cpu", "modelCache": {"enabled": False}, "gateway": {"autoscaling": AUTO}}
    )

    so = wait_for(lambda: admin.get(SO.format(ns=ns)), 20, 0.1, "the ScaledObject")
    (ref,) = so["metadata"]["ownerReferences"]
    assert ref["uid"] == vg["metadata"]["uid"] and ref["kind"] == "VoiceGateway" and ref["controller"]
    assert so["spec"]["scaleTargetRef"]["name"] == "demo-gateway"
    assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (1, 4)
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metadata"]["threshold"] == "10"
    assert f'namespace="{ns}"' in trigger["metadata"]["query"]
    assert admin.get(HPA.format(ns=ns)) is None  # KEDA makes its own HPA; ours would fight it

    def reported() -> Obj | None:
        st = (admin.vg(ns, "demo") or {}).get("status") or {}
        return st if (st.get("autoscaler") or {}).get("found") else None

    st = wait_for(reported, 20, 0.2, "status.autoscaler")
    assert st["autoscaler"]["kind"] == "keda.sh/v1alpha1 ScaledObject"
    assert not [k for k in st["unservedKinds"] if "keda" in k or "autoscaling" in k]

    # this resource opts out of KEDA: the ScaledObject is pruned and the HPA takes its place
    admin.merge_patch(
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/demo",
        {"spec": {"gateway": {"autoscaling": {"keda": {"enabled": False}}}}},
    )
    wait_for(lambda: admin.get(HPA.format(ns=ns)), 20, 0.2, "the HPA")
    wait_for(lambda: admin.get(SO.format(ns=ns)) is None, 20, 0.2, "the ScaledObject pruned")
    wait_for(
        lambda: (
            ((admin.vg(ns, "demo") or {}).get("status") or {}).get("autoscaler", {}).get("kind")
            == "autoscaling/v2beta2 HorizontalPodAutoscaler"
        ),
        20,
        0.2,
        "status names the HPA",
    )
    assert operator.forbidden_lines() == []
