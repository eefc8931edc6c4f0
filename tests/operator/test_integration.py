"""Scenarios against a REAL control plane (kube-apiserver + kube-controller-manager + etcd, v1.20):
the real `voice-gateway-operator run` process under a ServiceAccount bound to exactly its RBAC rules."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from voice_operator.kinds import kind_of
from voice_operator.render import HASH_ANNOTATION, render

from tests.operator.harness import (
    Api,
    ConflictProxy,
    OperatorProcess,
    Plane,
    make_node,
    make_pods_ready,
    operator_kubeconfig,
    wait_for,
)

pytestmark = pytest.mark.k8s
REPO = Path(__file__).resolve().parents[2]
Obj = dict[str, Any]
CPU = {"mode": "cpu", "modelCache": {"enabled": False}}


def children_of(admin: Api, vg: Obj) -> dict[tuple[str, str], Obj | None]:
    """Every child the operator should have made for the stored resource, as the cluster has it."""
    out = {}
    for obj in render(vg):
        k = kind_of(obj)
        if k.group in ("autoscaling", "policy"):
            continue  # not served by a 1.20 apiserver
        out[(obj["kind"], obj["metadata"]["name"])] = admin.get(
            k.path(obj["metadata"]["namespace"], obj["metadata"]["name"])
        )
    return out


def all_children(admin: Api, ns: str, name: str, timeout: float = 15) -> dict[tuple[str, str], Obj]:
    def check() -> dict[tuple[str, str], Obj] | None:
        vg = admin.vg(ns, name)
        got = children_of(admin, vg) if vg else {}
        return got if got and all(got.values()) else None  # type: ignore[return-value]

    return wait_for(check, timeout, 0.05, f"children of {ns}/{name}")


def phase(admin: Api, ns: str, name: str) -> str:
    return ((admin.vg(ns, name) or {}).get("status") or {}).get("phase", "")


def cond(vg: Obj, ctype: str) -> Obj:
    return next(c for c in vg["status"]["conditions"] if c["type"] == ctype)


def test_crd_installs_and_examples_apply(admin: Api, operator: OperatorProcess) -> None:
    crd = admin.get(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/voicegateways.voice.aetherpro.ai"
    )
    assert crd is not None
    assert any(c["type"] == "Established" and c["status"] == "True" for c in crd["status"]["conditions"])
    for path in sorted((REPO / "examples").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        ns = doc["metadata"].get("namespace") or "default"
        admin.ns(ns)
        r = admin.apply(
            f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/{doc['metadata']['name']}", doc
        )
        assert r.status_code in (200, 201), r.text
        stored = r.json()
        # the apiserver's own defaulting from the CRD schema
        assert stored["spec"]["omni"]["model"] == "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit"
        assert stored["spec"]["gateway"]["service"]["port"] == 8004
        assert stored["spec"]["audio"]["sampleRate"] == 24000
        if doc["spec"]["mode"] == "cpu":
            assert "gpu" not in stored["spec"]["omni"]
        all_children(admin, ns, doc["metadata"]["name"], 20)
    # the gpu example asks for an HPA and a PDB: a 1.20 cluster serves no policy/v1 (reported, the rest
    # applied) and gets the HPA at the version it serves, autoscaling/v2beta2
    vg = wait_for(
        lambda: (v := admin.vg("voice", "voice")) and v.get("status", {}).get("unservedKinds") and v,
        15,
        0.1,
        "unserved kinds reported",
    )
    rec = cond(vg, "Reconciled")
    assert rec["reason"] == "KindsNotServed"
    # its model-download Job runs first (no kubelet here, so it stays running): the cache is not ready yet
    cache = cond(vg, "ModelCacheReady")
    assert cache["status"] == "False" and cache["reason"] in ("Downloading", "DownloadPending")
    assert admin.list("/apis/batch/v1/namespaces/voice/jobs", "app.kubernetes.io/instance=voice")
    assert (
        "policy/v1 PodDisruptionBudget" in rec["message"] and "HorizontalPodAutoscaler" not in rec["message"]
    )
    assert admin.get("/apis/autoscaling/v2beta2/namespaces/voice/horizontalpodautoscalers/voice-gateway")
    # the apiserver's own validation from the schema
    bad = {
        "apiVersion": "voice.aetherpro.ai/v1alpha1",
        "kind": "VoiceGateway",
        "metadata": {"name": "bad"},
        "spec": {"mode": "tpu", "omni": {"replicas": -1}},
    }
    r = admin.req("POST", "/apis/voice.aetherpro.ai/v1alpha1/namespaces/default/voicegateways", bad)
    assert r.status_code == 422 and "spec.mode" in r.text and "spec.omni.replicas" in r.text


def test_create_makes_every_child_with_owner_reference(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    t0 = time.monotonic()
    vg = admin.create_vg(ns, "demo", CPU)
    children = all_children(admin, ns, "demo")
    elapsed = time.monotonic() - t0
    assert {k for k, _ in children} == {"ConfigMap", "Deployment", "Service", "NetworkPolicy"}
    assert len(children) == 8
    for obj in children.values():
        (ref,) = obj["metadata"]["ownerReferences"]
        assert ref["uid"] == vg["metadata"]["uid"] and ref["kind"] == "VoiceGateway" and ref["controller"]
        managers = {
            m["manager"] for m in obj["metadata"].get("managedFields", []) if m["operation"] == "Apply"
        }
        assert managers == {"voice-gateway-operator"}  # server-side apply under one field manager
    assert elapsed < 10, elapsed

    def progressing() -> Obj | None:
        st = ((admin.vg(ns, "demo") or {}).get("status")) or {}
        comps = st.get("components") or {}
        # the Deployment controller reports the new ReplicaSet's pods as updated a moment later
        ok = st.get("phase") == "Progressing" and all(c.get("updated") == 1 for c in comps.values())
        return st if ok and len(comps) == 3 else None

    st = wait_for(progressing, 10, 0.1, "Progressing with 3 updated components")
    assert st["endpoint"] == f"http://demo-gateway.{ns}.svc:8004"
    assert st["observedGeneration"] == 1
    assert st["components"]["omni"] == {"ready": 0, "desired": 1, "updated": 1}


def test_spec_change_updates_children_and_rolls_pods(admin: Api, operator: OperatorProcess, ns: str) -> None:
    admin.create_vg(ns, "demo", CPU)
    before = all_children(admin, ns, "demo")
    old_hash = before[("Deployment", "demo-gateway")]["spec"]["template"]["metadata"]["annotations"][
        HASH_ANNOTATION
    ]
    admin.merge_patch(
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/demo",
        {
            "spec": {
                "audio": {"sampleRate": 16000},
                "gateway": {"replicas": 2},
                "networkPolicy": {"enabled": False},
            }
        },
    )

    def updated() -> Obj | None:
        cm = admin.get(f"/api/v1/namespaces/{ns}/configmaps/demo-gateway-env")
        dep = admin.get(f"/apis/apps/v1/namespaces/{ns}/deployments/demo-gateway")
        ok = cm and cm["data"]["AUDIO_SAMPLE_RATE"] == "16000" and dep and dep["spec"]["replicas"] == 2
        return dep if ok else None

    dep = wait_for(updated, 15, 0.1, "children updated")
    assert dep["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION] != old_hash
    # a child no longer desired is pruned
    np_path = f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/demo-model-servers"
    wait_for(lambda: admin.get(np_path) is None, 15, 0.1, "NetworkPolicy pruned")
    # the changed template made a new ReplicaSet: the pods roll
    wait_for(
        lambda: (
            len(
                admin.list(
                    f"/apis/apps/v1/namespaces/{ns}/replicasets", "app.kubernetes.io/component=gateway"
                )
            )
            == 2
        ),
        15,
        0.2,
        "new ReplicaSet",
    )
    wait_for(
        lambda: (admin.vg(ns, "demo") or {}).get("status", {}).get("observedGeneration") == 2,
        10,
        0.1,
        "observedGeneration 2",
    )


def test_switch_to_embedded_engine_prunes_the_model_servers(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    admin.create_vg(ns, "demo", CPU)
    all_children(admin, ns, "demo")
    admin.merge_patch(
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/demo",
        {"spec": {"gateway": {"engine": "embedded"}}},
    )
    for path in (
        f"/apis/apps/v1/namespaces/{ns}/deployments/demo-omni",
        f"/apis/apps/v1/namespaces/{ns}/deployments/demo-tts",
        f"/api/v1/namespaces/{ns}/services/demo-omni",
        f"/api/v1/namespaces/{ns}/services/demo-tts",
    ):
        wait_for(lambda p=path: admin.get(p) is None, 15, 0.1, f"{path} pruned")  # type: ignore[misc]
    assert admin.get(f"/apis/apps/v1/namespaces/{ns}/deployments/demo-gateway") is not None
    vg = wait_for(
        lambda: (v := admin.vg(ns, "demo")) and cond(v, "OmniReady")["reason"] == "NotDeployed" and v,
        15,
        0.1,
        "OmniReady NotDeployed",
    )
    assert vg["status"]["ready"] == "0/1" and set(vg["status"]["components"]) == {"gateway"}
    env = admin.get(f"/api/v1/namespaces/{ns}/configmaps/demo-gateway-env")
    assert env is not None and env["data"]["VOICE_ENGINE"] == "embedded"


def test_child_deleted_by_hand_is_recreated(admin: Api, operator: OperatorProcess, ns: str) -> None:
    admin.create_vg(ns, "demo", CPU)
    before = all_children(admin, ns, "demo")
    for kind, path in (
        ("Deployment", f"/apis/apps/v1/namespaces/{ns}/deployments/demo-omni"),
        ("Service", f"/api/v1/namespaces/{ns}/services/demo-tts"),
        ("ConfigMap", f"/api/v1/namespaces/{ns}/configmaps/demo-gateway-env"),
        ("NetworkPolicy", f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/demo-model-servers"),
    ):
        old_uid = before[(kind, path.rsplit("/", 1)[1])]["metadata"]["uid"]
        assert admin.delete(path) == 200
        again = wait_for(
            lambda p=path, u=old_uid: (o := admin.get(p)) and o["metadata"]["uid"] != u and o,  # type: ignore[misc]
            15,
            0.1,
            f"{kind} recreated",
        )
        assert again["metadata"]["ownerReferences"][0]["name"] == "demo"


def test_field_edited_by_hand_is_reverted(admin: Api, operator: OperatorProcess, ns: str) -> None:
    admin.create_vg(ns, "demo", CPU)
    all_children(admin, ns, "demo")
    dep_path = f"/apis/apps/v1/namespaces/{ns}/deployments/demo-gateway"
    cm_path = f"/api/v1/namespaces/{ns}/configmaps/demo-gateway-env"
    admin.merge_patch(dep_path, {"spec": {"replicas": 5, "progressDeadlineSeconds": 42}})
    admin.merge_patch(cm_path, {"data": {"OMNI_SERVICE_URL": "http://evil:1"}})
    assert admin.get(dep_path)["spec"]["replicas"] == 5
    wait_for(
        lambda: (
            admin.get(dep_path)["spec"]["replicas"] == 1
            and admin.get(dep_path)["spec"]["progressDeadlineSeconds"] == 600
        ),
        15,
        0.2,
        "Deployment reverted",
    )
    wait_for(
        lambda: admin.get(cm_path)["data"]["OMNI_SERVICE_URL"] == f"http://demo-omni.{ns}.svc:8000",
        15,
        0.2,
        "ConfigMap reverted",
    )


def test_pods_ready_make_the_resource_ready(admin: Api, operator: OperatorProcess, ns: str) -> None:
    make_node(admin)
    admin.create_vg(ns, "demo", {**CPU, "gateway": {"replicas": 2}})
    all_children(admin, ns, "demo")
    wait_for(lambda: len(admin.list(f"/api/v1/namespaces/{ns}/pods")) == 4, 15, 0.1, "4 pods")
    wait_for(lambda: phase(admin, ns, "demo") in ("Pending", "Progressing"), 15, 0.1, "not ready before")
    wait_for(
        lambda: make_pods_ready(admin, ns, "app.kubernetes.io/instance=demo") == 4, 15, 0.2, "4 pods ready"
    )
    vg = wait_for(
        lambda: (v := admin.vg(ns, "demo")) and v["status"].get("phase") == "Ready" and v, 30, 0.1, "Ready"
    )
    st = vg["status"]
    assert st["ready"] == "4/4"
    assert st["components"] == {
        "omni": {"ready": 1, "desired": 1, "updated": 1},
        "tts": {"ready": 1, "desired": 1, "updated": 1},
        "gateway": {"ready": 2, "desired": 2, "updated": 2},
    }
    for t in ("Ready", "OmniReady", "TTSReady", "GatewayReady", "ModelCacheReady"):
        assert cond(vg, t)["status"] == "True", cond(vg, t)
        assert cond(vg, t)["lastTransitionTime"]
    # kubectl's view: the CRD's printer columns
    table = admin.http.get(
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/demo",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    ).json()
    cols = [c["name"] for c in table["columnDefinitions"]]
    assert cols[1:] == ["Mode", "Ready", "Phase", "Endpoint", "Age"]
    assert table["rows"][0]["cells"][1:5] == ["cpu", "4/4", "Ready", f"http://demo-gateway.{ns}.svc:8004"]


def test_stuck_rollout_makes_it_degraded_with_the_childs_message(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    admin.create_vg(ns, "demo", {**CPU, "tts": {"progressDeadlineSeconds": 2}})
    vg = wait_for(
        lambda: (v := admin.vg(ns, "demo")) and v.get("status", {}).get("phase") == "Degraded" and v,
        30,
        0.2,
        "Degraded",
    )
    tts = cond(vg, "TTSReady")
    assert tts["status"] == "False" and tts["reason"] == "ProgressDeadlineExceeded"
    assert "has timed out progressing" in tts["message"] and "demo-tts" in tts["message"]
    assert "has timed out progressing" in vg["status"]["message"]
    assert cond(vg, "OmniReady")["reason"] == "RolloutInProgress"


def test_deleting_the_resource_garbage_collects_children(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    admin.create_vg(ns, "demo", CPU)
    children = all_children(admin, ns, "demo")
    assert admin.delete(f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/demo") == 200
    paths = [kind_of(o).path(ns, n) for (_, n), o in children.items()]
    wait_for(lambda: all(admin.get(p) is None for p in paths), 30, 0.2, "children garbage-collected")


def test_invalid_resource_gets_invalid_and_no_children(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    admin.create_vg(ns, "bad", {"mode": "cpu", "omni": {"port": 9000}, "tts": {"port": 9000}})
    vg = wait_for(
        lambda: (v := admin.vg(ns, "bad")) and v.get("status", {}).get("phase") == "Invalid" and v,
        15,
        0.1,
        "Invalid",
    )
    assert "spec.tts.port" in vg["status"]["message"]
    assert cond(vg, "Ready")["reason"] == "InvalidSpec"
    time.sleep(1.0)
    for path in (
        "/apis/apps/v1/namespaces/{ns}/deployments",
        "/api/v1/namespaces/{ns}/services",
        "/api/v1/namespaces/{ns}/configmaps",
    ):
        assert admin.list(path.format(ns=ns), "app.kubernetes.io/instance=bad") == []
    # a valid resource made invalid keeps its running children untouched
    admin.create_vg(ns, "good", CPU)
    before = all_children(admin, ns, "good")
    admin.merge_patch(
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/good",
        {"spec": {"mode": "cpu", "omni": {"gpu": {"count": 1}}}},
    )
    vg = wait_for(
        lambda: (v := admin.vg(ns, "good")) and v["status"].get("phase") == "Invalid" and v,
        15,
        0.1,
        "Invalid after edit",
    )
    assert "spec.omni.gpu" in vg["status"]["message"]
    time.sleep(3.5)  # a drift-timer tick (3 s in the tests) would have re-applied them by now

    def desired(o: Obj) -> tuple[Any, ...]:
        return o.get("spec"), o.get("data"), o["metadata"].get("generation"), o["metadata"].get("labels")

    for obj in before.values():
        now = admin.get(kind_of(obj).path(ns, obj["metadata"]["name"]))
        assert now is not None and desired(now) == desired(obj)
    # fixing it brings it back
    admin.req(
        "PATCH",
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/good",
        [{"op": "remove", "path": "/spec/omni/gpu"}],
        "application/json-patch+json",
    ).raise_for_status()
    wait_for(lambda: phase(admin, ns, "good") == "Progressing", 15, 0.1, "valid again")


def test_conflict_from_a_concurrent_writer_is_retried(
    admin: Api, operator: OperatorProcess, proxy: ConflictProxy, ns: str
) -> None:
    before = operator.metric("voice_operator_api_retries_total", reason="conflict")
    proxy.arm_conflict(ns, "demo")
    admin.create_vg(ns, "demo", CPU)
    vg = wait_for(
        lambda: (v := admin.vg(ns, "demo")) and v.get("status", {}).get("phase") == "Progressing" and v,
        15,
        0.1,
        "status written despite the conflict",
    )
    assert proxy.conflicts_injected >= 1
    assert any(m == "PATCH" and p.endswith("/demo/status") and code == 409 for m, p, code in proxy.requests)
    assert operator.metric("voice_operator_api_retries_total", reason="conflict") > before
    # the concurrent writer's change is not lost either
    assert vg["metadata"]["annotations"]["tests/concurrent-writer"] == "was-here"
    assert vg["status"]["observedGeneration"] == 1


def test_apiserver_restart_operator_reconnects(
    admin: Api, operator: OperatorProcess, plane: Plane, proxy: ConflictProxy, ns: str
) -> None:
    admin.create_vg(ns, "before", CPU)
    all_children(admin, ns, "before")
    # kept short here; VOICE_OPERATOR_TEST_APISERVER_DOWNTIME=60 shows it also survives a long outage
    downtime = float(os.environ.get("VOICE_OPERATOR_TEST_APISERVER_DOWNTIME", "2"))
    plane.restart_apiserver(down_seconds=downtime, proxy=proxy)
    assert operator.proc.poll() is None, "operator died while the apiserver was down"
    # new work after the restart is picked up by the re-established watches
    admin.create_vg(ns, "after", CPU)
    all_children(admin, ns, "after", timeout=90)
    # and drift correction still works on the old one
    admin.delete(f"/api/v1/namespaces/{ns}/services/before-gateway")
    wait_for(lambda: admin.get(f"/api/v1/namespaces/{ns}/services/before-gateway"), 30, 0.2, "recreated")
    assert operator.proc.poll() is None


def test_namespaced_operator_works_with_the_namespaced_rules(
    admin: Api, plane: Plane, operator: OperatorProcess, tmp_path: Path
) -> None:
    """The chart's namespaced install: `run --namespace NS` under a ClusterRole with
    rbac.cluster_scoped_rules() plus a Role in NS with rbac.namespaced_rules(), nothing more."""
    ns = "watched-only"
    kubeconfig = operator_kubeconfig(admin, plane.api_url, tmp_path / "kubeconfig", [ns], name="ns-operator")
    op = OperatorProcess(kubeconfig, tmp_path / "ns-operator.log", resync=3.0, namespaces=[ns])
    try:
        op.wait_ready()
        admin.create_vg(ns, "demo", CPU)
        all_children(admin, ns, "demo")
        wait_for(
            lambda: op.metric("voice_operator_reconciles_total", result="ok") >= 1,
            20,
            0.2,
            "a reconcile by the namespaced operator",
        )
        # it reacts to its own namespace's children too (the watches are namespaced)
        admin.delete(f"/api/v1/namespaces/{ns}/configmaps/demo-gateway-env")
        wait_for(
            lambda: op.metric("voice_operator_reconciles_total", trigger="child-deleted") >= 1,
            20,
            0.2,
            "recreation by the namespaced operator",
        )
        assert op.metric("voice_operator_api_requests_total", code="403") == 0
        assert op.forbidden_lines() == []
    finally:
        op.stop()
        admin.delete(f"/api/v1/namespaces/{ns}")


def test_a_child_the_server_rejects_degrades_but_the_rest_is_reconciled(
    admin: Api, operator: OperatorProcess, ns: str
) -> None:
    """A bad object never crashes the operator: env values are passed through verbatim, so a number where
    Kubernetes wants a string is only refused when the Deployment is written."""
    admin.create_vg(ns, "demo", {**CPU, "gateway": {"env": [{"name": "FOO", "value": 1}]}})
    vg = wait_for(
        lambda: (v := admin.vg(ns, "demo")) and v["status"].get("phase") == "Degraded" and v,
        30,
        0.2,
        "Degraded",
    )
    rec = cond(vg, "Reconciled")
    assert rec["status"] == "False" and rec["reason"] == "ApplyFailed" and "demo-gateway" in rec["message"]
    # everything else was applied
    for path in (
        f"/apis/apps/v1/namespaces/{ns}/deployments/demo-omni",
        f"/apis/apps/v1/namespaces/{ns}/deployments/demo-tts",
        f"/api/v1/namespaces/{ns}/services/demo-gateway",
    ):
        assert admin.get(path) is not None
    assert admin.get(f"/apis/apps/v1/namespaces/{ns}/deployments/demo-gateway") is None
    assert operator.proc.poll() is None
    # fixed -> reconciled
    admin.merge_patch(
        f"/apis/voice.aetherpro.ai/v1alpha1/namespaces/{ns}/voicegateways/demo",
        {"spec": {"gateway": {"env": [{"name": "FOO", "value": "1"}]}}},
    )
    wait_for(lambda: admin.get(f"/apis/apps/v1/namespaces/{ns}/deployments/demo-gateway"), 20, 0.2, "applied")
    wait_for(lambda: phase(admin, ns, "demo") == "Progressing", 20, 0.2, "Progressing")


# keep last: the RBAC audit must see every other scenario's traffic
def test_operator_never_hit_forbidden(operator: OperatorProcess) -> None:
    """Runs last: the operator ran every scenario under exactly rbac.cluster_rules(); any 403 means the
    chart's ClusterRole would be missing a permission."""
    assert operator.metric("voice_operator_api_requests_total", code="403") == 0
    assert operator.forbidden_lines() == []
    assert operator.metric("voice_operator_reconciles_total") > 0
    assert operator.proc.poll() is None
