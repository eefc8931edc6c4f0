"""`helm install` on a REAL control plane: the chart's rendered objects go through a real kube-apiserver
(validation, the CRD's structural schema and defaulting, RBAC), and the real operator, running under the
chart's own ServiceAccount and ClusterRole, turns the chart's VoiceGateway into a Ready stack.

The plane is the project's scripts/k8s (kube-apiserver + kube-controller-manager + etcd v1.20, no kubelet:
pods are bound and marked Ready the way KWOK does). helm renders with `helm template` (what `helm install`
sends); objects are applied server-side in Helm's install order.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.charts.chart_tools import Obj, of_kind, one, template, values_args
from tests.operator.harness import Api, OperatorProcess, Plane, make_node, make_pods_ready, wait_for

NS = "voice"
RELEASE = "voice-gateway"
# Helm's install order for the kinds the chart has (CRDs first, from crds/).
ORDER = [
    "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
    "ConfigMap", "Service", "Deployment", "VoiceGateway",
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
    objs = [o for o in template(*values_args("cpu"), release=RELEASE, namespace=NS) if o["kind"] != "Pod"]
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


def _sa_kubeconfig(plane: Plane, admin: Api, sa: str, path: Path) -> Path:
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
        "clusters": [{"name": "c", "cluster": {"server": plane.api_url, "certificate-authority": plane.ca}}],
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


def test_operator_under_the_charts_rbac_makes_the_resource_ready(
    plane: Plane, installed: tuple[Api, list[Obj]], tmp_path: Path
) -> None:
    admin, objs = installed
    sa = one(objs, "ServiceAccount")["metadata"]["name"]
    kubeconfig = _sa_kubeconfig(plane, admin, sa, tmp_path / "kubeconfig")
    op = OperatorProcess(kubeconfig, tmp_path / "operator.log", resync=3.0)
    try:
        op.wait_ready()
        vg_path = _path(one(objs, "VoiceGateway"))
        name = one(objs, "VoiceGateway")["metadata"]["name"]

        # the operator's children (the chart's own objects carry managed-by=Helm)
        mine = f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by=voice-gateway-operator"

        def children() -> list[Any]:
            deps = admin.list(f"/apis/apps/v1/namespaces/{NS}/deployments", mine)
            return deps if len(deps) == 3 else []

        try:
            deps = wait_for(children, 60, 0.5, "gateway, omni and tts Deployments")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noperator log:\n{op.tail(80)}") from None
        assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deps} == {
            "gateway",
            "omni",
            "tts",
        }
        make_node(admin)

        def ready() -> Any:
            make_pods_ready(admin, NS, mine)
            vg = admin.get(vg_path) or {}
            return vg.get("status", {}).get("phase") == "Ready" and vg

        vg = wait_for(ready, 90, 1.0, "VoiceGateway Ready")
        conditions = {c["type"]: c["status"] for c in vg["status"]["conditions"]}
        assert conditions["Ready"] == "True", conditions
        assert vg["status"]["endpoint"].startswith(f"http://{name}-gateway.{NS}.svc:8004")
        # the Services the chart's ServiceMonitors select exist with the port name they scrape
        services = admin.list(f"/api/v1/namespaces/{NS}/services", mine)
        by_component = {s["metadata"]["labels"]["app.kubernetes.io/component"]: s for s in services}
        for component in ("gateway", "omni", "tts"):
            assert "http" in {p["name"] for p in by_component[component]["spec"]["ports"]}
        log = (tmp_path / "operator.log").read_text(errors="replace")
        assert "forbidden" not in log.lower(), op.tail()
        assert op.metric("voice_operator_reconciles_total") >= 1
    finally:
        op.stop()
