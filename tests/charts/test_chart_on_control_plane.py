"""`helm install` on a REAL control plane: the chart's rendered objects go through a real kube-apiserver
(validation, the CRD's structural schema and defaulting, RBAC), and the real operator, running under the
chart's own ServiceAccount and ClusterRole, turns the chart's VoiceGateway into a Ready stack.

The plane is the project's scripts/k8s (kube-apiserver + kube-controller-manager + etcd v1.20, no kubelet:
pods are bound and marked Ready the way KWOK does). helm renders with `helm template` (what `helm install`
sends); objects are applied server-side in Helm's install order.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.chart_tools import Obj, metric_names, of_kind, one, template, values_args
from tests.charts.prom import (
    Prometheus,
    run_panel_query,
    running_prometheus,
    scrape_job,
    silent_families,
    targets,
    wait,
)
from tests.operator.harness import (
    Api,
    ConflictProxy,
    OperatorProcess,
    Plane,
    make_node,
    make_pods_ready,
    wait_for,
)

NS = "voice"
RELEASE = "voice-gateway"
# Helm's install order for the kinds the chart has (CRDs first, from crds/).
ORDER = [
    "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
    "ConfigMap", "Service", "Deployment", "VoiceGateway", "Pod",
]  # fmt: skip
PLURALS = {
    "CustomResourceDefinition": "customresourcedefinitions",
    "ServiceAccount": "serviceaccounts",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ConfigMap": "configmaps",
    "Service": "services",
    "Deployment": "deployments",
    "VoiceGateway": "voicegateways",
    "Pod": "pods",  # the `helm test` hook: `helm test` creates it; applied here for the apiserver's checks
}


def _path(obj: Obj) -> str:
    api = obj["apiVersion"]
    base = f"/apis/{api}" if "/" in api else f"/api/{api}"
    ns = obj["metadata"].get("namespace")
    scope = f"/namespaces/{ns}" if ns else ""
    return f"{base}{scope}/{PLURALS[obj['kind']]}/{obj['metadata']['name']}"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("chart-k8s")
    p = Plane(root / "plane")
    p.ensure_binaries()  # cached; CI builds them in scripts/setup.d/50-k8s.sh. A failed build fails the test.
    p.up()
    try:
        yield p
    finally:
        p.down()


@pytest.fixture(scope="module")
def installed(plane: Plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, list[Obj]]]:
    """The chart (cpu profile) applied object by object, as `helm install -n voice` would."""
    admin = plane.admin()
    objs = template(*values_args("cpu"), release=RELEASE, namespace=NS)
    assert {o["kind"] for o in objs} <= set(ORDER), {o["kind"] for o in objs} - set(ORDER)
    admin.ns(NS)
    for kind in ORDER:
        for obj in of_kind(objs, kind):
            r = admin.apply(_path(obj), obj, manager="helm")
            assert r.status_code in (200, 201), f"{kind}/{obj['metadata']['name']}: {r.status_code} {r.text}"
        if kind == "CustomResourceDefinition":
            wait_for(
                lambda: _established(admin, _path(one(objs, "CustomResourceDefinition"))), 30, 0.2, "CRD"
            )
    yield admin, objs


def _established(admin: Api, path: str) -> bool:
    conditions = (admin.get(path) or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _sa_kubeconfig(plane: Plane, admin: Api, sa: str, path: Path, server: str) -> Path:
    """A kubeconfig with the token of the chart's ServiceAccount (1.20's token controller makes a Secret)."""

    def token() -> str | None:
        obj = admin.get(f"/api/v1/namespaces/{NS}/serviceaccounts/{sa}") or {}
        for ref in obj.get("secrets") or []:
            data = (admin.get(f"/api/v1/namespaces/{NS}/secrets/{ref['name']}") or {}).get("data") or {}
            if data.get("token"):
                return base64.b64decode(data["token"]).decode()
        return None

    tok = wait_for(token, 30, 0.2, "ServiceAccount token")
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "op",
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority": plane.ca}}],
        "users": [{"name": "op", "user": {"token": tok}}],
        "contexts": [{"name": "op", "context": {"cluster": "c", "user": "op", "namespace": NS}}],
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_apiserver_accepts_and_defaults_the_chart(installed: tuple[Api, list[Obj]]) -> None:
    admin, objs = installed
    vg = admin.get(_path(one(objs, "VoiceGateway")))
    assert vg is not None
    spec = vg["spec"]
    # the CRD's defaults, applied by the real apiserver
    assert spec["mode"] == "cpu"
    assert spec["omni"]["model"] == "cyankiwi/Qwen3-Omni-30B-A3B-Instruct-AWQ-4bit"
    assert spec["tts"]["model"] == "Qwen/Qwen3-TTS-12Hz-0.6B-Base"
    assert spec["gateway"]["service"]["port"] == 8004
    dep = admin.get(_path(one(objs, "Deployment", "operator")))
    assert dep is not None and dep["spec"]["template"]["spec"]["serviceAccountName"] == f"{RELEASE}-operator"
    # a value the CRD's schema forbids is refused by the apiserver itself
    bad = yaml.safe_load(yaml.safe_dump(one(objs, "VoiceGateway")))
    bad["spec"]["mode"] = "tpu"
    r = admin.apply(_path(bad), bad, manager="helm")
    assert r.status_code == 422 and "spec.mode" in r.text, r.text


@dataclass
class Running:
    admin: Api
    objs: list[Obj]
    op: OperatorProcess
    prom: Prometheus
    log: Path
    name: str
    selector: str  # the operator's children (the chart's own objects carry managed-by=Helm)


@pytest.fixture(scope="module")
def running(
    plane: Plane, installed: tuple[Api, list[Obj]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """The real operator under the chart's ServiceAccount (so: the chart's RBAC), scraped by a real
    Prometheus as the chart's operator ServiceMonitor would, with the chart's resource made Ready and one
    invalid resource beside it."""
    admin, objs = installed
    tmp = tmp_path_factory.mktemp("chart-operator")
    sa = one(objs, "ServiceAccount")["metadata"]["name"]
    # a transparent proxy in front of the apiserver that can make one write race a real concurrent writer
    proxy = ConflictProxy(plane.api_url, plane.ca, admin)
    proxy.start()
    kubeconfig = _sa_kubeconfig(plane, admin, sa, tmp / "kubeconfig", proxy.url)
    op = OperatorProcess(kubeconfig, tmp / "operator.log", resync=3.0)
    try:
        op.wait_ready()
        job = scrape_job("operator", op.metrics_port, NS, f"{RELEASE}-operator-metrics")
        with running_prometheus(tmp, [job]) as prom:
            name = one(objs, "VoiceGateway")["metadata"]["name"]
            selector = (
                f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=voice-gateway-operator"
            )
            run = Running(admin, objs, op, prom, tmp / "operator.log", name, selector)

            def children() -> list[Any]:
                deps = admin.list(f"/apis/apps/v1/namespaces/{NS}/deployments", run.selector)
                return deps if len(deps) == 3 else []

            try:
                wait_for(children, 60, 0.5, "gateway, omni and tts Deployments")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\noperator log:\n{op.tail(80)}") from None
            make_node(admin)
            vg_path = _path(one(objs, "VoiceGateway"))

            def ready() -> Any:
                make_pods_ready(admin, NS, run.selector)
                vg = admin.get(vg_path) or {}
                return vg.get("status", {}).get("phase") == "Ready" and vg

            wait_for(ready, 90, 1.0, "VoiceGateway Ready")
            # semantically invalid (GPU settings in cpu mode): the operator marks it Invalid and counts an
            # error; its first status write meets a 409 from a concurrent writer and is retried
            proxy.arm_conflict(NS, "broken")
            admin.create_vg(NS, "broken", {"mode": "cpu", "omni": {"gpu": {"count": 1}}})
            wait_for(lambda: (admin.vg(NS, "broken") or {}).get("status", {}).get("phase") == "Invalid", 30,
                     0.5, "Invalid phase")  # fmt: skip
            wait(lambda: prom.value("sum(voice_operator_errors_total)") >= 2, 30, "errors scraped")
            wait(lambda: prom.value("sum(voice_operator_api_retries_total)") >= 1, 30, "retry scraped")
            time.sleep(2)
            yield run
    finally:
        op.stop()
        proxy.stop()


def test_operator_under_the_charts_rbac_makes_the_resource_ready(running: Running) -> None:
    admin, name = running.admin, running.name
    deps = admin.list(f"/apis/apps/v1/namespaces/{NS}/deployments", running.selector)
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deps} == {
        "gateway",
        "omni",
        "tts",
    }
    vg = admin.get(_path(one(running.objs, "VoiceGateway")))
    assert vg is not None
    conditions = {c["type"]: c["status"] for c in vg["status"]["conditions"]}
    assert conditions["Ready"] == "True", conditions
    assert vg["status"]["endpoint"].startswith(f"http://{name}-gateway.{NS}.svc:8004")
    # the Services the chart's ServiceMonitors select exist with the port name they scrape
    services = admin.list(f"/api/v1/namespaces/{NS}/services", running.selector)
    by_component = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s for s in services}
    for component in ("gateway", "omni", "tts"):
        assert "http" in {p["name"] for p in by_component[component]["spec"]["ports"]}
    # an invalid resource next to it touched nothing
    assert admin.list(f"/apis/apps/v1/namespaces/{NS}/deployments", "app.kubernetes.io/instance=broken") == []
    # no permission was missing: no 403 from the API, nothing forbidden in the log
    log = running.log.read_text(errors="replace")
    assert "forbidden" not in log.lower(), running.op.tail()
    assert running.prom.value('sum(voice_operator_api_requests_total{code="403"})') == 0


OPERATOR_TARGETS = targets("operator")


@pytest.mark.parametrize(("title", "expr"), OPERATOR_TARGETS, ids=[t for t, _ in OPERATOR_TARGETS])
def test_operator_dashboard_query_returns_data(running: Running, title: str, expr: str) -> None:
    exposition = running.op.metrics()
    silent = silent_families(metric_names(expr), exposition)
    if silent:
        # e.g. API retries: a healthy run against a healthy apiserver has none
        pytest.xfail(f"the operator has no sample of {sorted(silent)} in this run")
    run_panel_query(running.prom, "operator", expr)
