"""Thin kopf handlers: every path ends in Reconciler (reconcile.py), which does the work."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any, cast

import kopf

from voice_operator import GROUP, KIND, PLURAL, VERSION
from voice_operator.kube import ApiError, Kube, NamespaceTerminating, TransientError
from voice_operator.metrics import MANAGED
from voice_operator.reconcile import ReconcileFailed, Reconciler
from voice_operator.render import MANAGED_BY

log = logging.getLogger("voice_operator")
RESYNC_SECONDS = float(os.environ.get("VOICE_OPERATOR_RESYNC_SECONDS", "60"))
CHILD_FILTER = {"app.kubernetes.io/managed-by": MANAGED_BY}
_state: dict[str, Any] = {}


class _Forever:
    """kopf retries a failed API request once per item of error_backoffs, then gives up. An apiserver
    that is away for minutes (an upgrade, a control-plane restart) must not end the operator's watches:
    this sequence never runs out, capped at 30 s between attempts."""

    def __iter__(self) -> Iterator[float]:
        return itertools.chain([0.5, 1, 2, 5, 10], itertools.repeat(30.0))


def _login() -> kopf.ConnectionInfo:
    settings = kopf.OperatorSettings()
    has_kubeconfig = bool(os.environ.get("KUBECONFIG")) or os.path.exists(
        os.path.expanduser("~/.kube/config")
    )
    info = kopf.login_with_kubeconfig(settings=settings) if has_kubeconfig else None
    info = info or kopf.login_with_service_account(settings=settings)
    if info is None:
        raise kopf.LoginError("no kubeconfig and no in-cluster service account")
    return info


def _post_phase_event(vg: dict[str, Any], old: str, new: str, message: str) -> None:
    """A Kubernetes Event per phase change, so `kubectl describe vgw` tells the story."""
    kind = "Warning" if new in ("Degraded", "Invalid") else "Normal"
    # outside kopf's operator context there is no event queue (LookupError): nothing to post to
    # kopf.event wants a Body view; an object read from the API is a RawBody, which mypy cannot infer
    # from dict[str, Any] (TypedDicts accept only literal keys)
    body = kopf.Body(cast(kopf.RawBody, vg))
    with contextlib.suppress(LookupError):
        kopf.event(body, type=kind, reason=new, message=f"{old or 'new'} -> {new}: {message}"[:1000])


def reconciler() -> Reconciler:
    if "reconciler" not in _state:
        r = Reconciler(Kube(_login))
        r.on_phase_change = _post_phase_event
        _state["reconciler"] = r
    return _state["reconciler"]


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    # kopf's watches and the operator's own client use the same credentials
    return _login()


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    prefix = GROUP
    # kopf's bookkeeping goes to annotations only: status belongs to the operator's own status writer
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
    settings.persistence.finalizer = f"{prefix}/finalizer"
    settings.peering.standalone = True  # one replica; no peering objects to create or to grant RBAC for
    settings.posting.level = logging.WARNING  # events for problems only: 200 resources, not 200 "succeeded"
    settings.watching.connect_timeout = 5
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.error_backoffs = _Forever()
    settings.batching.error_delays = [1, 2, 5, 10, 20]
    port = int(os.environ.get("VOICE_OPERATOR_METRICS_PORT", "0"))
    if port and not _state.get("metrics_started"):
        from prometheus_client import start_http_server

        start_http_server(port)
        _state["metrics_started"] = True
        log.info("Prometheus metrics on :%d/metrics", port)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    r = _state.pop("reconciler", None)
    if r is not None:
        await r.kube.close()


async def _run(body: kopf.Body, trigger: str, prune: bool) -> None:
    try:
        phase = await reconciler().reconcile(dict(body), trigger, prune=prune)
    except NamespaceTerminating:
        return  # the namespace is being deleted with everything in it
    except (ReconcileFailed, TransientError, ApiError) as e:
        # never crash and never give up: kopf retries the handler after the delay
        raise kopf.TemporaryError(str(e), delay=10) from e
    log.debug(
        "%s/%s reconciled (%s): %s", body["metadata"]["namespace"], body["metadata"]["name"], trigger, phase
    )


@kopf.on.create(GROUP, VERSION, PLURAL)
async def on_create(body: kopf.Body, **_: Any) -> None:
    await _run(body, "create", prune=False)  # nothing to prune on a fresh resource


@kopf.on.update(GROUP, VERSION, PLURAL)
async def on_update(body: kopf.Body, **_: Any) -> None:
    await _run(body, "update", prune=True)


@kopf.on.resume(GROUP, VERSION, PLURAL)
async def on_resume(body: kopf.Body, **_: Any) -> None:
    # Re-apply everything (drift while the operator was away), but prune only when the spec changed since
    # the last reconcile: pruning lists every child kind in the namespace, the costly part of a restart
    # with hundreds of resources.
    status = body.get("status") or {}
    spec_changed = status.get("observedGeneration") != body["metadata"].get("generation")
    await _run(body, "resume", prune=spec_changed)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
async def drift(body: kopf.Body, **_: Any) -> None:
    """Re-apply every child: a child deleted or edited by hand is restored (server-side apply with
    force takes back the fields the operator owns)."""
    await _run(body, "timer", prune=False)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def vg_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    deleted = event.get("type") == "DELETED"
    reconciler().seen_vg(dict(body), deleted=deleted)
    if deleted:
        # children go with the owner: the garbage collector deletes them via their ownerReferences
        reconciler().forget(body["metadata"]["uid"])
    _state.setdefault("known", set())
    known: set[str] = _state["known"]
    (known.discard if event.get("type") == "DELETED" else known.add)(body["metadata"]["uid"])
    MANAGED.set(len(known))


def _owner(body: kopf.Body) -> tuple[str, str] | None:
    for ref in body["metadata"].get("ownerReferences") or []:
        if (
            ref.get("kind") == KIND
            and ref.get("controller")
            and ref.get("apiVersion", "").startswith(GROUP + "/")
        ):
            return body["metadata"]["namespace"], ref["name"]
    return None


async def _child_event(event: kopf.RawEvent, body: kopf.Body, status_only: bool) -> None:
    owner = _owner(body)
    if owner is None:
        return
    r = reconciler()
    deleted = event.get("type") == "DELETED"
    if body.get("kind") == "Deployment":
        r.seen_deployment(dict(body), deleted=deleted)
    if not deleted:
        if status_only:
            r.request_refresh(*owner)  # debounced: one refresh per burst of status updates
        return
    try:
        vg = r.vgs.get(owner) or await r.kube.get_vg(*owner)
        if vg is None or vg["metadata"].get("deletionTimestamp"):
            return
        ours = any(
            ref.get("uid") == vg["metadata"]["uid"] for ref in body["metadata"].get("ownerReferences") or []
        )
        if ours:
            # deleted by hand: put it back now rather than at the next timer tick
            await r.reconcile(vg, "child-deleted", prune=False)
    except NamespaceTerminating:
        pass  # the namespace is being deleted with everything in it
    except (ReconcileFailed, TransientError, ApiError) as e:
        log.warning("reacting to %s %s: %s", body.get("kind"), body["metadata"]["name"], e)


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_FILTER)
async def deployment_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    # status follows the Deployments' own status (ready replicas, progress deadline)
    await _child_event(event, body, status_only=True)


@kopf.on.event("", "v1", "services", labels=CHILD_FILTER)
async def service_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    await _child_event(event, body, status_only=False)


@kopf.on.event("", "v1", "configmaps", labels=CHILD_FILTER)
async def configmap_event(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    await _child_event(event, body, status_only=False)


def run_operator(
    namespaces: list[str],
    all_namespaces: bool,
    liveness: str,
    metrics_port: int,
    verbose: bool,
) -> int:
    """Run kopf in this process. The drift timer's interval is read from VOICE_OPERATOR_RESYNC_SECONDS
    when this module is imported (kopf fixes it at registration), so the CLI sets that first."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kopf.objects", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ["VOICE_OPERATOR_METRICS_PORT"] = str(metrics_port)
    clusterwide = all_namespaces or not namespaces
    asyncio.run(
        kopf.operator(
            clusterwide=clusterwide,
            namespaces=[] if clusterwide else namespaces,
            liveness_endpoint=liveness or None,
            standalone=True,
        )
    )
    return 0
