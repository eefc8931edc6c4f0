"""helm lint/template with the real helm; every manifest checked against the real Kubernetes schemas."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.charts.chart_tools import (
    CHART,
    MONITORING_APIS,
    PROFILES,
    Obj,
    crd_json_schema,
    helm,
    load_crd,
    of_kind,
    one,
    template,
    values_args,
)
from tests.charts.prom_operator_schemas import PROMETHEUS_OPERATOR_SPECS

# (id, helm template arguments). Every variant is linted by helm and validated object by object.
VARIANTS: dict[str, tuple[str, ...]] = {
    "default": (),
    "profile-gpu": values_args("gpu"),
    "profile-cpu": values_args("cpu"),
    "gpu-with-prometheus-operator": (*values_args("gpu"), *MONITORING_APIS),
    "cpu-monitoring-forced": (
        *values_args("cpu"),
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.prometheusRule.enabled=true",
    ),
    "namespaced-operator": ("--set", "operator.watchNamespaces={team-a,team-b}", *MONITORING_APIS),
    "operator-only": (
        "--set",
        "voiceGateway.create=false",
        "--set",
        "monitoring.dashboards.enabled=false",
        "--set",
        "tests.enabled=false",
    ),
}
# The chart's kubeVersion range starts at 1.27; 1.30 is the release the project validates against everywhere,
# 1.37 the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.27.0", "1.30.0", "1.37.0")
BUILTIN_GROUPS = ("", "apps", "rbac.authorization.k8s.io", "apiextensions.k8s.io", "policy", "batch")
RECOMMENDED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "helm.sh/chart",
)


def _group(obj: Obj) -> str:
    api = obj["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


@pytest.mark.parametrize("profile", [None, *PROFILES])
def test_helm_lint_strict(profile: str | None) -> None:
    proc = helm("lint", "--strict", "{chart}", *values_args(profile), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"].startswith(">=1.27")
    assert chart["type"] == "application"
    # helm refuses a kubeVersion outside the range
    proc = helm("template", "x", "{chart}", "--kube-version", "1.25.0", check=False)
    assert proc.returncode != 0 and "kubeVersion" in proc.stderr


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_builtin_manifests_valid_strict(variant: str, k8s: str) -> None:
    objs = template(*VARIANTS[variant], "--kube-version", k8s)
    builtin = [o for o in objs if _group(o) in BUILTIN_GROUPS]
    assert builtin, "nothing rendered"
    errors = []
    for obj in builtin:
        try:
            kubernetes_validate.validate(obj, k8s, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_valid_against_their_schemas(variant: str) -> None:
    objs = template(*VARIANTS[variant])
    crd_schema = crd_json_schema(load_crd())
    for obj in objs:
        group = _group(obj)
        if group in BUILTIN_GROUPS:
            continue
        if obj["kind"] == "VoiceGateway":
            jsonschema.validate(obj, crd_schema)
        elif group == "monitoring.coreos.com":
            jsonschema.validate(obj["spec"], PROMETHEUS_OPERATOR_SPECS[obj["kind"]])
        else:
            pytest.fail(f"unexpected kind {obj['apiVersion']}/{obj['kind']}")


def test_every_object_has_recommended_labels_and_namespace() -> None:
    objs = template(*VARIANTS["gpu-with-prometheus-operator"])
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
    for obj in objs:
        if obj["kind"] == "CustomResourceDefinition":
            continue  # crds/ is never templated by helm
        labels = obj["metadata"].get("labels", {})
        missing = [k for k in RECOMMENDED_LABELS if k not in labels]
        assert not missing, f"{obj['kind']}/{obj['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == "voice-gateway"
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == "voice"
    # pod templates carry the selector labels too
    dep = one(objs, "Deployment", "operator")
    assert (
        dep["spec"]["selector"]["matchLabels"].items()
        <= dep["spec"]["template"]["metadata"]["labels"].items()
    )


def test_operator_deployment_is_hardened_and_wired() -> None:
    objs = template()
    dep = one(objs, "Deployment", "operator")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert c["image"] == "ghcr.io/aetherpro/voice-gateway-operator:0.1.0"
    assert c["command"] == ["voice-gateway-operator"] and c["args"][0] == "run"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"] and "--metrics-port=9090" in c["args"]
    assert pod["serviceAccountName"] == one(objs, "ServiceAccount")["metadata"]["name"]
    # the arguments are ones the operator's own CLI accepts
    from voice_operator.cli import build_parser

    build_parser().parse_args(c["args"])
    ns = template("--set", "operator.watchNamespaces={team-a,team-b}")
    args = one(ns, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args
    build_parser().parse_args(args)


@pytest.mark.parametrize(
    ("profile", "omni_image"),
    [("gpu", "reg.example/vllm-omni:v9"), ("cpu", "reg.example/gw:dev")],
)
def test_image_values_reach_the_voicegateway_resource(profile: str, omni_image: str) -> None:
    objs = template(
        *values_args(profile),
        "--set", "images.gateway.repository=reg.example/gw", "--set", "images.gateway.tag=dev",
        "--set", "images.vllmOmni.repository=reg.example/vllm-omni", "--set", "images.vllmOmni.tag=v9",
        "--set", "images.operator.repository=reg.example/op",
        "--set", "images.operator.digest=sha256:" + "a" * 64,
    )  # fmt: skip
    vg = one(objs, "VoiceGateway")
    assert vg["spec"]["mode"] == profile
    assert vg["spec"]["gateway"]["image"] == "reg.example/gw:dev"
    assert vg["spec"]["omni"]["image"] == omni_image
    assert vg["spec"]["tts"]["image"] == omni_image
    op = one(objs, "Deployment", "operator")["spec"]["template"]["spec"]["containers"][0]
    assert op["image"] == "reg.example/op@sha256:" + "a" * 64
    # an image set in the spec itself wins over images.*
    objs = template("--set", "voiceGateway.spec.gateway.image=mine/gw:1")
    assert one(objs, "VoiceGateway")["spec"]["gateway"]["image"] == "mine/gw:1"


def test_voicegateway_resource_renders_through_the_operator() -> None:
    """The operator's own renderer accepts the chart's resource in both profiles (semantic checks too)."""
    from voice_operator.render import render

    for profile in PROFILES:
        vg = one(template(*values_args(profile)), "VoiceGateway")
        children = render(vg)
        kinds = {c["kind"] for c in children}
        assert {"Deployment", "Service"} <= kinds, kinds


@pytest.mark.parametrize(
    ("args", "variant_objs"),
    [
        ((), {"ServiceMonitor": 0, "PrometheusRule": 0}),
        (MONITORING_APIS, {"ServiceMonitor": 3, "PrometheusRule": 1}),
        (
            (*MONITORING_APIS, "--set", "monitoring.serviceMonitor.enabled=false",
             "--set", "monitoring.prometheusRule.enabled=false"),
            {"ServiceMonitor": 0, "PrometheusRule": 0},
        ),
        (
            ("--set", "monitoring.serviceMonitor.enabled=true",
             "--set", "monitoring.prometheusRule.enabled=true"),
            {"ServiceMonitor": 3, "PrometheusRule": 1},
        ),
        ((*MONITORING_APIS, "--set", "operator.enabled=false"), {"ServiceMonitor": 2, "PrometheusRule": 1}),
    ],
    ids=["no-api", "api-present", "api-present-disabled", "forced", "no-operator"],
)  # fmt: skip
def test_prometheus_operator_objects_only_when_api_present_or_enabled(
    args: tuple[str, ...], variant_objs: dict[str, int]
) -> None:
    objs = template(*args)
    for kind, count in variant_objs.items():
        assert len(of_kind(objs, kind)) == count, kind


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        op = expr["operator"]
        if (op == "In" and value not in expr["values"]) or (op == "NotIn" and value in expr["values"]):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


@pytest.mark.parametrize("profile", list(PROFILES))
def test_servicemonitors_select_the_operators_services(profile: str) -> None:
    """The ServiceMonitors' selectors and port names match the Services the operator really renders."""
    from voice_operator.render import render

    objs = template(*values_args(profile), *MONITORING_APIS)
    services = [c for c in render(one(objs, "VoiceGateway")) if c["kind"] == "Service"]
    services += of_kind(objs, "Service")  # the chart's own (operator metrics)
    expected = {"gateway": {"gateway"}, "model-servers": {"omni", "tts"}, "operator": {"operator"}}
    for sm in of_kind(objs, "ServiceMonitor"):
        suffix = next(k for k in expected if sm["metadata"]["name"].endswith(k))
        chosen = [s for s in services if _selects(sm["spec"]["selector"], s["metadata"]["labels"])]
        components = {s["metadata"]["labels"]["app.kubernetes.io/component"] for s in chosen}
        assert components == expected[suffix], (sm["metadata"]["name"], components)
        port = sm["spec"]["endpoints"][0]["port"]
        for s in chosen:
            assert port in {p.get("name") for p in s["spec"]["ports"]}, (s["metadata"]["name"], port)


def test_dashboards_configmap_for_the_grafana_sidecar() -> None:
    objs = template()
    cms = [o for o in of_kind(objs, "ConfigMap") if "dashboard" in o["metadata"]["name"]]
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(cms) == len(files) >= 1
    for cm in cms:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "Voice Gateway"
        ((name, text),) = cm["data"].items()
        assert json.loads(text) == json.loads((CHART / "dashboards" / name).read_text())
    other = template("--set", "monitoring.dashboards.namespace=grafana")
    assert {c["metadata"]["namespace"] for c in of_kind(other, "ConfigMap")} == {"grafana"}


def test_helm_test_hook_calls_gateway_health() -> None:
    from voice_operator.render import render

    objs = template()
    pod = one(objs, "Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    url = pod["spec"]["containers"][0]["args"][-1]
    gateway_svc = next(
        c for c in render(one(objs, "VoiceGateway"))
        if c["kind"] == "Service" and c["metadata"]["labels"]["app.kubernetes.io/component"] == "gateway"
    )  # fmt: skip
    port = gateway_svc["spec"]["ports"][0]["port"]
    assert url == f"http://{gateway_svc['metadata']['name']}.voice.svc:{port}/health"
    assert "--fail" in pod["spec"]["containers"][0]["args"]


def test_notes_tell_how_to_reach_the_gateway(tmp_path: Any) -> None:
    """NOTES.txt rendered offline: a copy of the chart renders it into a ConfigMap through `tpl`."""
    import shutil

    chart = tmp_path / "voice-gateway"
    shutil.copytree(CHART, chart)
    (chart / "files" / "NOTES.txt").write_text((CHART / "templates" / "NOTES.txt").read_text())
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}\n'
    )
    text = helm("template", "voice-gateway", "{chart}", "-n", "voice", *MONITORING_APIS, chart=chart).stdout
    notes = next(d for d in yaml.safe_load_all(text) if d and d["metadata"]["name"] == "notes")["data"][
        "notes"
    ]
    assert "kubectl -n voice get voicegateway voice-gateway -w" in notes
    assert "port-forward svc/voice-gateway-gateway 8004:8004" in notes
    assert "helm test voice-gateway -n voice" in notes
    assert "ServiceMonitors created" in notes and "PrometheusRule created" in notes


def test_packaged_chart_renders_the_same(tmp_path: Any) -> None:
    """`helm package` keeps everything the templates read (files/, dashboards/, crds/)."""
    helm("package", "{chart}", "-d", str(tmp_path))
    (tgz,) = tmp_path.glob("voice-gateway-*.tgz")
    args = ("template", "voice-gateway", "--namespace", "voice", "--include-crds", *MONITORING_APIS)
    packaged = [d for d in yaml.safe_load_all(helm(*args[:2], str(tgz), *args[2:]).stdout) if d]
    assert packaged == template(*MONITORING_APIS)
