"""Reconcile one VoiceGateway: render -> apply (server-side) -> prune -> status. Stateless apart from a
per-resource lock (so the timer, spec changes and child events never interleave on one resource) and the
last apply outcome (so a status refresh triggered by a child event keeps reporting it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voice_operator.autoscaling import HPA_V2, HPA_V2BETA2, KEDA
from voice_operator.kinds import BY_KIND, CHILD_KINDS, Kind, kind_of
from voice_operator.kube import ApiError, Kube, NamespaceTerminating, TransientError
from voice_operator.metrics import API_RETRIES, ERRORS, PHASES, RECONCILE_SECONDS, RECONCILES
from voice_operator.plan import build_plan
from voice_operator.render import MANAGED_BY, child_name, endpoint, render
from voice_operator.spec import InvalidSpec
from voice_operator.status import Observed, compute_status, merge_patch, status_changed

log = logging.getLogger("voice_operator.reconcile")
Obj = dict[str, Any]
DEPLOYMENT = BY_KIND[("apps/v1", "Deployment")]
PVC = BY_KIND[("v1", "PersistentVolumeClaim")]
JOB = BY_KIND[("batch/v1", "Job")]
# group/versions whose presence changes what is rendered (the HPA's version, KEDA or not)
OPTIONAL_APIS = (HPA_V2, HPA_V2BETA2, KEDA)
STATUS_ATTEMPTS = 8


class ReconcileFailed(Exception):
    """Some children could not be applied; status says which. The caller retries later."""


@dataclass
class _Memo:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    unserved: list[str] = field(default_factory=list)
    apply_errors: list[str] = field(default_factory=list)
    refresh_pending: bool = False


class Reconciler:
    def __init__(self, kube: Kube, debounce: float = 0.2):
        self.kube = kube
        self.debounce = debounce
        self._memo: dict[str, _Memo] = {}
        self.phases: dict[str, str] = {}
        # Latest bodies seen on the watches (and in apply responses): status refreshes read these instead
        # of GETting every Deployment on every event, which at 200 resources was most of the API traffic.
        self.vgs: dict[tuple[str, str], Obj] = {}
        self.deployments: dict[tuple[str, str], Obj] = {}
        self._scheduled: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # called as (resource, old phase, new phase, message) after a phase change is written
        self.on_phase_change: Callable[[Obj, str, str, str], None] | None = None

    # ------------------------------------------------------------ watch-fed caches

    @staticmethod
    def _newer(new: Obj, old: Obj | None) -> bool:
        if old is None:
            return True
        try:  # resourceVersions are etcd revisions in practice; if not, trust arrival order
            return int(new["metadata"]["resourceVersion"]) >= int(old["metadata"]["resourceVersion"])
        except (KeyError, ValueError):
            return True

    def seen_vg(self, body: Obj, deleted: bool = False) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self.vgs.pop(key, None)
        elif self._newer(body, self.vgs.get(key)):
            self.vgs[key] = body

    def seen_deployment(self, body: Obj, deleted: bool = False) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if deleted:
            self.deployments.pop(key, None)
        elif self._newer(body, self.deployments.get(key)):
            self.deployments[key] = body

    def request_refresh(self, namespace: str, name: str) -> None:
        """Refresh a resource's status soon. Events come in bursts (a rollout updates a Deployment's status
        several times a second): one refresh per burst is enough."""
        key = (namespace, name)
        if key in self._scheduled:
            return
        self._scheduled.add(key)
        task = asyncio.get_running_loop().create_task(self._delayed_refresh(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _delayed_refresh(self, key: tuple[str, str]) -> None:
        await asyncio.sleep(self.debounce)
        self._scheduled.discard(key)
        vg = self.vgs.get(key) or await self.kube.get_vg(*key)
        if vg is None or vg["metadata"].get("deletionTimestamp"):
            return
        try:
            await self.refresh_status(vg)
        except NamespaceTerminating:
            pass
        except (ApiError, TransientError) as e:
            log.warning("status refresh of %s/%s failed: %s", key[0], key[1], e)

    def _m(self, uid: str) -> _Memo:
        return self._memo.setdefault(uid, _Memo())

    def forget(self, uid: str) -> None:
        self._memo.pop(uid, None)
        self.phases.pop(uid, None)
        self._export_phases()

    def _export_phases(self) -> None:
        counts: dict[str, int] = {}
        for p in self.phases.values():
            counts[p] = counts.get(p, 0) + 1
        for p in ("Pending", "Progressing", "Ready", "Degraded", "Invalid"):
            PHASES.labels(p).set(counts.get(p, 0))

    async def reconcile(self, vg: Obj, trigger: str, prune: bool = True) -> str:
        """Apply every desired child, prune the undesired, then write status. Returns the phase."""
        uid = vg["metadata"]["uid"]
        memo = self._m(uid)
        t0 = time.monotonic()
        result = "error"
        try:
            async with memo.lock:
                phase = await self._reconcile_locked(vg, memo, prune)
            result = "invalid" if phase == "Invalid" else ("failed" if memo.apply_errors else "ok")
            return phase
        finally:
            RECONCILES.labels(trigger, result).inc()
            RECONCILE_SECONDS.labels(trigger).observe(time.monotonic() - t0)

    async def _reconcile_locked(self, vg: Obj, memo: _Memo, prune: bool) -> str:
        meta = vg["metadata"]
        try:
            children = render(vg, await self.served_apis())
        except InvalidSpec as e:
            # No child is touched: a typo must not tear down a running stack.
            ERRORS.labels("invalid_spec").inc()
            log.warning("VoiceGateway %s/%s is invalid: %s", meta["namespace"], meta["name"], e)
            return await self.refresh_status(vg, locked=True)

        unserved: list[str] = []
        errors: list[str] = []
        wanted: list[Obj] = []
        for obj in children:
            k = kind_of(obj)
            if not await self.kube.served(k):
                unserved.append(f"{k.api_version} {k.kind}")
            else:
                wanted.append(obj)
        # Config, storage and Services first so pods never start without their ConfigMaps.
        first = [o for o in wanted if o["kind"] in ("ConfigMap", "PersistentVolumeClaim", "Service")]
        second = [o for o in wanted if o not in first]
        for wave in (first, second):
            results = await asyncio.gather(*(self.kube.apply(o) for o in wave), return_exceptions=True)
            if any(isinstance(r, NamespaceTerminating) for r in results):
                log.debug("namespace %s is terminating; nothing to reconcile", meta["namespace"])
                return self.phases.get(meta["uid"], "")
            for obj, res in zip(wave, results, strict=True):
                if isinstance(res, dict) and res.get("kind") == "Deployment":
                    self.seen_deployment(res)
                if isinstance(res, BaseException):
                    if not isinstance(res, ApiError | TransientError):
                        raise res
                    ERRORS.labels("apply").inc()
                    errors.append(f"{obj['kind']} {obj['metadata']['name']}: {res}")
        if prune and not errors:
            errors += await self._prune(vg, {(o["kind"], o["metadata"]["name"]) for o in wanted})
        memo.unserved, memo.apply_errors = sorted(set(unserved)), errors
        phase = await self.refresh_status(vg, locked=True)
        if errors:
            raise ReconcileFailed("; ".join(errors))
        return phase

    async def served_apis(self) -> set[str]:
        """The optional group/versions this cluster serves (discovery is cached by Kube.served)."""
        out: set[str] = set()
        for k in CHILD_KINDS:
            if k.api_version in OPTIONAL_APIS and await self.kube.served(k):
                out.add(k.api_version)
        return out

    async def _prune(self, vg: Obj, keep: set[tuple[str, str]]) -> list[str]:
        """Delete children this resource owns that are no longer desired (ingress switched off, engine
        changed to embedded, a new model download Job...). PVCs are never pruned: they hold the cache."""
        meta = vg["metadata"]
        sel = f"app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/instance={meta['name']}"
        errors: list[str] = []

        async def one(k: Kind) -> None:
            if not k.prunable or not await self.kube.served(k):
                return
            for item in await self.kube.list(k, meta["namespace"], sel):
                owners = item["metadata"].get("ownerReferences") or []
                if (
                    any(o.get("uid") == meta["uid"] for o in owners)
                    and (k.kind, item["metadata"]["name"]) not in keep
                ):
                    log.info("pruning %s %s/%s", k.kind, meta["namespace"], item["metadata"]["name"])
                    await self.kube.delete(k, meta["namespace"], item["metadata"]["name"])

        results = await asyncio.gather(*(one(k) for k in CHILD_KINDS), return_exceptions=True)
        for r in results:
            if isinstance(r, ApiError | TransientError):
                errors.append(f"prune: {r}")
            elif isinstance(r, BaseException):
                raise r
        return errors

    async def observe(self, vg: Obj) -> Observed:
        """Read what the plan says should exist (the same plan render() followed)."""
        meta = vg["metadata"]
        ns, name = meta["namespace"], meta["name"]
        o = Observed(endpoint=endpoint(vg))
        memo = self._m(meta["uid"])
        o.unserved, o.apply_errors = list(memo.unserved), list(memo.apply_errors)
        try:
            plan = build_plan(vg, await self.served_apis())
        except InvalidSpec:
            return o  # compute_status reports the spec's problems; nothing to read
        comps = list(plan.names)
        o.cache_mode = plan.cache_mode
        o.job_desired = plan.download_job is not None
        reads: list[Any] = [self._deployment(ns, child_name(name, c)) for c in comps]
        reads.append(
            self.kube.get(PVC, ns, child_name(name, "model-cache")) if o.cache_mode == "pvc" else _none()
        )
        reads.append(self.kube.get(JOB, ns, plan.download_job) if plan.download_job else _none())
        scaler = BY_KIND.get(plan.autoscaler) if plan.autoscaler else None
        served = scaler is not None and await self.kube.served(scaler)
        reads.append(self.kube.get(scaler, ns, child_name(name, "gateway")) if scaler and served else _none())
        got = await asyncio.gather(*reads)
        o.deployments = dict(zip(comps, got[: len(comps)], strict=True))
        o.pvc, o.job, o.autoscaler = got[len(comps)], got[len(comps) + 1], got[len(comps) + 2]
        if plan.autoscaler is not None:
            o.autoscaler_kind = f"{plan.autoscaler[0]} {plan.autoscaler[1]}"
        return o

    async def _deployment(self, ns: str, name: str) -> Obj | None:
        cached = self.deployments.get((ns, name))
        if cached is not None:
            return cached
        got = await self.kube.get(DEPLOYMENT, ns, name)
        if got is not None:
            self.seen_deployment(got)
        return got

    async def refresh_status(self, vg: Obj, locked: bool = False) -> str:
        """Recompute and write status. The write is guarded by resourceVersion; on a 409 (someone else
        wrote the object meanwhile) re-read the object and recompute, so nothing is lost or stale."""
        meta = vg["metadata"]
        memo = self._m(meta["uid"])
        if not locked:
            if memo.refresh_pending:  # one queued refresh reads the newest state anyway
                return self.phases.get(meta["uid"], "")
            memo.refresh_pending = True
            try:
                async with memo.lock:
                    memo.refresh_pending = False
                    key = (meta["namespace"], meta["name"])
                    fresh = self.vgs.get(key) or await self.kube.get_vg(*key)
                    if fresh is None or fresh["metadata"].get("uid") != meta["uid"]:
                        return ""
                    return await self.refresh_status(fresh, locked=True)
            finally:
                memo.refresh_pending = False
        current = vg
        for _attempt in range(STATUS_ATTEMPTS):
            invalid = _invalid(current)
            observed = await self.observe(current)
            observed.invalid = invalid
            status = compute_status(current, observed)
            self.phases[meta["uid"]] = status["phase"]
            self._export_phases()
            if not status_changed(current.get("status"), status):
                return status["phase"]
            try:
                written = await self.kube.patch_status(
                    meta["namespace"],
                    meta["name"],
                    current["metadata"]["resourceVersion"],
                    merge_patch(current.get("status"), status),
                )
                if written:
                    self.seen_vg(written)
                old_phase = (current.get("status") or {}).get("phase", "")
                if old_phase != status["phase"] and self.on_phase_change is not None:
                    self.on_phase_change(current, old_phase, status["phase"], status.get("message", ""))
                return status["phase"]
            except ApiError as e:
                if e.status != 409:
                    raise
                API_RETRIES.labels("conflict").inc()
                log.info(
                    "status of %s/%s: conflict, re-reading (%s)", meta["namespace"], meta["name"], e.message
                )
                fresh = await self.kube.get_vg(meta["namespace"], meta["name"])
                if fresh is None or fresh["metadata"]["uid"] != meta["uid"]:
                    return ""
                self.seen_vg(fresh)
                current = fresh
        raise TransientError(f"status of {meta['namespace']}/{meta['name']}: conflicts persisted")


def _invalid(vg: Obj) -> list[str] | None:
    """The field-named problems of an invalid resource, None for a valid one (judged afresh on every
    status write, since the spec may have changed since the last reconcile)."""
    try:
        render(vg)
    except InvalidSpec as e:
        return [str(x) for x in e.errors]
    return None


async def _none() -> None:
    return None
