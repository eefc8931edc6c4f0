"""Unit tests of the pure status computation."""

from __future__ import annotations

from typing import Any

from voice_operator.status import Observed, compute_status

Obj = dict[str, Any]
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def vg(status: Obj | None = None, generation: int = 2) -> Obj:
    return {
        "metadata": {"name": "demo", "namespace": "ns", "generation": generation},
        "spec": {},
        "status": status or {},
    }


def dep(
    name: str,
    desired: int = 1,
    ready: int = 0,
    updated: int | None = None,
    conditions: list[Obj] | None = None,
    gen: int = 1,
    observed: int = 1,
) -> Obj:
    return {
        "metadata": {"name": name, "generation": gen},
        "spec": {"replicas": desired},
        "status": {
            "replicas": desired,
            "readyReplicas": ready,
            "updatedReplicas": desired if updated is None else updated,
            "observedGeneration": observed,
            "conditions": conditions or [],
        },
    }


def cond(status: Obj, ctype: str) -> Obj:
    (c,) = [c for c in status["conditions"] if c["type"] == ctype]
    return c


def all_ready() -> Observed:
    return Observed(
        deployments={
            "omni": dep("d-omni", 1, 1),
            "tts": dep("d-tts", 1, 1),
            "gateway": dep("d-gateway", 2, 2),
        },
        cache_mode="pvc",
        pvc={"metadata": {"name": "d-model-cache"}, "status": {"phase": "Bound"}},
        endpoint="http://d-gateway.ns.svc:8004",
    )


def test_ready_with_counts_and_conditions() -> None:
    st = compute_status(vg(), all_ready(), now=T0)
    assert st["phase"] == "Ready"
    assert st["observedGeneration"] == 2
    assert st["ready"] == "4/4"
    assert st["components"]["gateway"] == {"ready": 2, "desired": 2, "updated": 2}
    assert st["endpoint"] == "http://d-gateway.ns.svc:8004"
    for t in ("Ready", "OmniReady", "TTSReady", "GatewayReady", "ModelCacheReady"):
        c = cond(st, t)
        assert c["status"] == "True" and c["lastTransitionTime"] == T0 and c["reason"] and c["message"]


def test_last_transition_time_kept_while_status_unchanged() -> None:
    first = compute_status(vg(), all_ready(), now=T0)
    o = all_ready()
    o.deployments["tts"] = dep("d-tts", 1, 0)
    second = compute_status(vg(first), o, now=T1)
    assert cond(second, "OmniReady")["lastTransitionTime"] == T0  # unchanged status: time kept
    assert cond(second, "TTSReady")["lastTransitionTime"] == T1  # flipped: new time
    assert cond(second, "TTSReady")["status"] == "False"
    assert second["phase"] == "Progressing"
    assert cond(second, "Ready")["status"] == "False"


def test_pending_when_nothing_exists_yet() -> None:
    o = Observed(deployments={"omni": None, "tts": None, "gateway": None}, cache_mode="emptydir")
    st = compute_status(vg(), o, now=T0)
    assert st["phase"] == "Pending"
    assert cond(st, "OmniReady")["reason"] == "NotFound"


def test_progress_deadline_makes_it_degraded_with_the_childs_message() -> None:
    o = all_ready()
    msg = 'ReplicaSet "d-omni-5d4b" has timed out progressing.'
    o.deployments["omni"] = dep(
        "d-omni",
        1,
        0,
        conditions=[
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": msg}
        ],
    )
    st = compute_status(vg(), o, now=T0)
    assert st["phase"] == "Degraded"
    assert msg in cond(st, "OmniReady")["message"]
    assert cond(st, "OmniReady")["reason"] == "ProgressDeadlineExceeded"
    assert msg in cond(st, "Ready")["message"] and msg in st["message"]


def test_old_generation_rollout_not_ready() -> None:
    o = all_ready()
    o.deployments["gateway"] = dep("d-gateway", 2, 2, gen=3, observed=2)
    st = compute_status(vg(), o, now=T0)
    assert cond(st, "GatewayReady")["status"] == "False"


def test_invalid_keeps_component_counts_and_names_field() -> None:
    prev = compute_status(vg(), all_ready(), now=T0)
    o = Observed(invalid=["spec.tts.port: equals spec.omni.port"])
    st = compute_status(vg(prev), o, now=T1)
    assert st["phase"] == "Invalid"
    assert "spec.tts.port" in st["message"]
    assert cond(st, "Ready")["reason"] == "InvalidSpec"
    assert st["components"] == prev["components"]


def test_unserved_kinds_reported_but_not_degrading() -> None:
    o = all_ready()
    o.unserved = ["autoscaling/v2 HorizontalPodAutoscaler"]
    st = compute_status(vg(), o, now=T0)
    assert st["phase"] == "Ready"
    rec = cond(st, "Reconciled")
    assert rec["reason"] == "KindsNotServed" and "autoscaling/v2" in rec["message"]
    assert st["unservedKinds"] == ["autoscaling/v2 HorizontalPodAutoscaler"]


def test_apply_errors_degrade() -> None:
    o = all_ready()
    o.apply_errors = ["Deployment d-omni: 403 Forbidden: nope"]
    st = compute_status(vg(), o, now=T0)
    assert st["phase"] == "Degraded" and cond(st, "Reconciled")["status"] == "False"


def test_model_cache_states() -> None:
    o = all_ready()
    o.pvc = {"metadata": {"name": "c"}, "status": {"phase": "Pending"}}
    st = compute_status(vg(), o, now=T0)
    # reported, but not gating: a WaitForFirstConsumer claim stays Pending until a pod is scheduled,
    # and ready model servers prove the volume works
    assert cond(st, "ModelCacheReady")["status"] == "False" and st["phase"] == "Ready"
    o.job_desired = True
    o.job = {
        "metadata": {"name": "j"},
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                }
            ]
        },
    }
    st = compute_status(vg(), o, now=T0)
    assert st["phase"] == "Degraded" and "backoff limit" in cond(st, "ModelCacheReady")["message"]
    o.job = {"metadata": {"name": "j"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert cond(compute_status(vg(), o, now=T0), "ModelCacheReady")["reason"] == "Downloaded"


def test_embedded_engine_components() -> None:
    o = Observed(deployments={"gateway": dep("d-gateway", 1, 1)}, cache_mode="emptydir")
    st = compute_status(vg(), o, now=T0)
    assert st["phase"] == "Ready" and st["ready"] == "1/1"
    assert cond(st, "OmniReady")["reason"] == "NotDeployed"


def test_merge_patch_removes_what_disappeared() -> None:
    from voice_operator.status import merge_patch

    old = {"phase": "Ready", "components": {"omni": {"ready": 1}, "gateway": {"ready": 1}}, "x": [1]}
    new = {"phase": "Progressing", "components": {"gateway": {"ready": 0}}}
    assert merge_patch(old, new) == {
        "phase": "Progressing",
        "x": None,
        "components": {"omni": None, "gateway": {"ready": 0}},
    }
