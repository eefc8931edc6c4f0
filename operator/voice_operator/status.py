"""Pure status computation: the children's observed state -> the VoiceGateway's status (phase, conditions
in the Kubernetes convention, per-component replicas, endpoint). lastTransitionTime only moves when a
condition's status changes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
COMPONENTS = (("omni", "OmniReady"), ("tts", "TTSReady"), ("gateway", "GatewayReady"))


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Observed:
    """What the reconciler saw. Deployments by component (None: absent; missing key: not desired)."""

    deployments: dict[str, Obj | None] = field(default_factory=dict)
    cache_mode: str = "pvc"  # pvc | existing | emptydir
    pvc: Obj | None = None
    job: Obj | None = None
    job_desired: bool = False
    unserved: list[str] = field(default_factory=list)
    apply_errors: list[str] = field(default_factory=list)
    invalid: list[str] | None = None
    endpoint: str = ""
    autoscaler_kind: str = ""  # "apiVersion kind" the plan wants; empty: no autoscaling
    autoscaler: Obj | None = None


@dataclass
class Cond:
    type: str
    status: bool | None
    reason: str
    message: str

    def as_dict(self) -> Obj:
        s = "Unknown" if self.status is None else ("True" if self.status else "False")
        return {"type": self.type, "status": s, "reason": self.reason, "message": self.message}


def _dep_condition(dep: Obj, ctype: str) -> Obj | None:
    for c in (dep.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return c
    return None


def component_state(ctype: str, name: str, dep: Obj | None) -> tuple[Cond, Obj, bool]:
    """(condition, replica counts, stuck) for one Deployment."""
    if dep is None:
        return (
            Cond(ctype, False, "NotFound", f"Deployment {name} does not exist yet"),
            {"ready": 0, "desired": 0, "updated": 0},
            False,
        )
    spec, st = dep.get("spec") or {}, dep.get("status") or {}
    dname = dep["metadata"]["name"]
    desired = spec.get("replicas", 1)
    ready, updated = st.get("readyReplicas", 0) or 0, st.get("updatedReplicas", 0) or 0
    counts = {"ready": ready, "desired": desired, "updated": updated}
    progressing = _dep_condition(dep, "Progressing")
    failure = _dep_condition(dep, "ReplicaFailure")
    if (
        progressing
        and progressing.get("status") == "False"
        and progressing.get("reason") == "ProgressDeadlineExceeded"
    ):
        return (
            Cond(
                ctype,
                False,
                "ProgressDeadlineExceeded",
                f"Deployment {dname}: {progressing.get('message', 'rollout stuck')}",
            ),
            counts,
            True,
        )
    if failure and failure.get("status") == "True":
        return (
            Cond(
                ctype,
                False,
                failure.get("reason") or "ReplicaFailure",
                f"Deployment {dname}: {failure.get('message', '')}",
            ),
            counts,
            True,
        )
    current = (st.get("observedGeneration") or 0) >= (dep["metadata"].get("generation") or 0)
    if current and ready >= desired and updated >= desired and (st.get("replicas", 0) or 0) <= desired:
        reason = "ScaledToZero" if desired == 0 else "MinimumReplicasReady"
        return Cond(ctype, True, reason, f"{ready}/{desired} replicas ready"), counts, False
    return (
        Cond(
            ctype,
            False,
            "RolloutInProgress",
            f"Deployment {dname}: {ready}/{desired} replicas ready, {updated} updated",
        ),
        counts,
        False,
    )


def cache_condition(o: Observed) -> tuple[Cond, bool]:
    """(ModelCacheReady, failed)."""
    t = "ModelCacheReady"
    if o.job_desired:
        job = o.job
        if job is None:
            return Cond(t, False, "DownloadPending", "model download Job not created yet"), False
        st = job.get("status") or {}
        for c in st.get("conditions") or []:
            if c.get("type") == "Complete" and c.get("status") == "True":
                return Cond(
                    t, True, "Downloaded", f"Job {job['metadata']['name']} downloaded the models"
                ), False
            if c.get("type") == "Failed" and c.get("status") == "True":
                return Cond(
                    t,
                    False,
                    "DownloadFailed",
                    f"Job {job['metadata']['name']}: {c.get('message') or c.get('reason', '')}",
                ), True
        return Cond(
            t, False, "Downloading", f"Job {job['metadata']['name']} is downloading the models"
        ), False
    if o.cache_mode == "emptydir":
        return Cond(
            t, True, "EmptyDir", "no persistent cache requested; models load from the image or hub"
        ), False
    if o.cache_mode == "existing":
        return Cond(t, True, "ExistingClaim", "using an existing PersistentVolumeClaim"), False
    if o.pvc is None:
        return Cond(t, False, "NotFound", "model cache PersistentVolumeClaim does not exist yet"), False
    phase = (o.pvc.get("status") or {}).get("phase", "Pending")
    name = o.pvc["metadata"]["name"]
    if phase == "Bound":
        return Cond(t, True, "Bound", f"PersistentVolumeClaim {name} is bound"), False
    if phase == "Lost":
        return Cond(t, False, "Lost", f"PersistentVolumeClaim {name} lost its volume"), True
    # Pending is normal for WaitForFirstConsumer storage classes until a pod is scheduled
    return Cond(t, False, "Pending", f"PersistentVolumeClaim {name} is {phase}"), False


def autoscaler_status(o: Observed, name: str) -> Obj | None:
    """The autoscaler the plan wants and what it reports (an HPA's replica counts; KEDA's HPA is its own)."""
    if not o.autoscaler_kind:
        return None
    out: Obj = {"kind": o.autoscaler_kind, "name": name, "found": o.autoscaler is not None}
    st = (o.autoscaler or {}).get("status") or {}
    for key in ("currentReplicas", "desiredReplicas"):
        if isinstance(st.get(key), int):
            out[key] = st[key]
    return out


def merge_conditions(old: list[Obj] | None, new: list[Cond], now: str, generation: int) -> list[Obj]:
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in new:
        d = c.as_dict()
        prev = previous.get(c.type)
        d["lastTransitionTime"] = (
            prev["lastTransitionTime"]
            if (prev and prev.get("status") == d["status"] and prev.get("lastTransitionTime"))
            else now
        )
        d["observedGeneration"] = generation
        out.append(d)
    return out


def compute_status(vg: Obj, o: Observed, now: str | None = None) -> Obj:
    now = now or now_iso()
    old = vg.get("status") or {}
    generation = vg["metadata"].get("generation", 0)
    conds: list[Cond] = []
    status: Obj = {"observedGeneration": generation, "endpoint": o.endpoint}

    if o.invalid is not None:
        msg = "; ".join(o.invalid)
        conds.append(Cond("Ready", False, "InvalidSpec", msg))
        status |= {"phase": "Invalid", "message": msg, "ready": "0/0"}
        status["conditions"] = merge_conditions(old.get("conditions"), conds, now, generation)
        # keep the last known component counts: the children were not touched
        if "components" in old:
            status["components"] = old["components"]
        return status

    components: Obj = {}
    stuck: list[str] = []
    waiting: list[Cond] = []
    for comp, ctype in COMPONENTS:
        if comp not in o.deployments:  # not desired (embedded engine: no model servers)
            conds.append(
                Cond(ctype, True, "NotDeployed", f"{comp} runs inside the gateway (embedded engine)")
            )
            continue
        cond, counts, is_stuck = component_state(ctype, comp, o.deployments[comp])
        components[comp] = counts
        conds.append(cond)
        if is_stuck:
            stuck.append(cond.message)
        elif not cond.status:
            waiting.append(cond)
    cache, cache_failed = cache_condition(o)
    conds.append(cache)
    if cache_failed:
        stuck.append(cache.message)

    problems: list[str] = []
    if o.apply_errors:
        problems += o.apply_errors
        conds.append(Cond("Reconciled", False, "ApplyFailed", "; ".join(o.apply_errors)))
    elif o.unserved:
        conds.append(
            Cond(
                "Reconciled",
                True,
                "KindsNotServed",
                "applied every child except kinds this cluster does not serve: " + ", ".join(o.unserved),
            )
        )
    else:
        conds.append(Cond("Reconciled", True, "Applied", "every child applied"))

    all_ready = not stuck and not waiting and not problems
    if all_ready:
        ready = Cond("Ready", True, "AllComponentsReady", "every component is ready")
        phase = "Ready"
    elif stuck or problems:
        ready = Cond("Ready", False, "Degraded", "; ".join(stuck + problems))
        phase = "Degraded"
    else:
        ready = Cond("Ready", False, waiting[0].reason, "; ".join(c.message for c in waiting))
        nothing_yet = all(c.reason == "NotFound" for c in waiting) and len(waiting) == len(components)
        phase = "Pending" if nothing_yet else "Progressing"
    conds.insert(0, ready)
    total_ready = sum(c["ready"] for c in components.values())
    total_desired = sum(c["desired"] for c in components.values())
    status |= {
        "phase": phase,
        "message": ready.message,
        "components": components,
        "ready": f"{total_ready}/{total_desired}",
        "unservedKinds": sorted(o.unserved),
        "conditions": merge_conditions(old.get("conditions"), conds, now, generation),
    }
    scaler = autoscaler_status(o, f"{vg['metadata']['name']}-gateway")
    if scaler is not None:
        status["autoscaler"] = scaler
    return status


def status_changed(old: Obj | None, new: Obj) -> bool:
    return (old or {}) != new


def merge_patch(old: Obj | None, new: Obj) -> Obj:
    """A JSON merge patch turning `old` into `new`: keys that disappeared are sent as null (a plain merge
    patch would keep, say, the model servers' counts after switching to the embedded engine)."""
    out: Obj = {}
    old = old or {}
    for key in old.keys() - new.keys():
        out[key] = None
    for key, value in new.items():
        prev = old.get(key)
        out[key] = merge_patch(prev, value) if isinstance(value, dict) and isinstance(prev, dict) else value
    return out
