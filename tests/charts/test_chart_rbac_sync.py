"""The chart's CRD and RBAC are the operator's own (generated, kept identical) and grant no more."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from tests.charts.chart_tools import MONITORING_APIS, REPO, Obj, load_crd, of_kind, one, template, values_args

Perm = tuple[str, str, str]  # (apiGroup, resource, verb)


def _perms(rules: list[dict[str, Any]]) -> set[Perm]:
    out: set[Perm] = set()
    for r in rules:
        assert "nonResourceURLs" not in r and "resourceNames" not in r
        for g in r["apiGroups"]:
            for res in r["resources"]:
                for v in r["verbs"]:
                    out.add((g, res, v))
    return out


def test_generated_files_are_in_sync_with_the_operator() -> None:
    # The chart's CRD and RBAC copies and the Compose files (scripts/sync-generated.py).
    proc = subprocess.run(
        [sys.executable, "scripts/sync-generated.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, (
        f"generated files are stale (run scripts/sync-generated.py):\n{proc.stdout}{proc.stderr}"
    )


def test_chart_crd_equals_operator_cli_output() -> None:
    """`voice-gateway-operator crd` (what users apply by hand) and the chart's crds/ are the same object."""
    proc = subprocess.run(
        [sys.executable, "-m", "voice_operator", "crd"], cwd=REPO, capture_output=True, text=True, check=True
    )
    cli = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert cli == [load_crd()]
    rendered = one(template(), "CustomResourceDefinition")
    assert rendered == load_crd()
    names = rendered["spec"]["names"]
    assert (rendered["spec"]["group"], names["kind"], names["plural"]) == (
        "voice.aetherpro.ai",
        "VoiceGateway",
        "voicegateways",
    )
    assert "vgw" in names["shortNames"]
    assert [v["name"] for v in rendered["spec"]["versions"]] == ["v1alpha1"]


def _bound(objs: list[Obj], role_kind: str, binding_kind: str) -> dict[str, set[Perm]]:
    """namespace ('' for cluster) -> permissions granted to the operator's ServiceAccount."""
    dep = one(objs, "Deployment", "operator")
    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    roles = {(r["metadata"].get("namespace", ""), r["metadata"]["name"]): r for r in of_kind(objs, role_kind)}
    out: dict[str, set[Perm]] = {}
    for b in of_kind(objs, binding_kind):
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "voice"}]
        ns = b["metadata"].get("namespace", "")
        assert b["roleRef"]["kind"] == role_kind
        role = roles[(ns, b["roleRef"]["name"])]
        out.setdefault(ns, set()).update(_perms(role["rules"]))
    return out


def test_cluster_wide_install_grants_exactly_the_operators_rules() -> None:
    from voice_operator import rbac

    objs = template()
    granted = _bound(objs, "ClusterRole", "ClusterRoleBinding")[""]
    assert granted == _perms(rbac.cluster_rules())
    assert not of_kind(objs, "Role") and not of_kind(objs, "RoleBinding")


def test_namespaced_install_grants_cluster_scoped_rules_plus_a_role_per_namespace() -> None:
    from voice_operator import rbac

    objs = template("--set", "operator.watchNamespaces={team-a,team-b}")
    assert _bound(objs, "ClusterRole", "ClusterRoleBinding")[""] == _perms(rbac.cluster_scoped_rules())
    per_ns = _bound(objs, "Role", "RoleBinding")
    assert set(per_ns) == {"team-a", "team-b"}
    for perms in per_ns.values():
        assert perms == _perms(rbac.namespaced_rules())


def test_no_wildcards_and_no_escalation_verbs() -> None:
    for args in ((), ("--set", "operator.watchNamespaces={team-a}")):
        objs = template(*args, *MONITORING_APIS)
        for role in of_kind(objs, "ClusterRole") + of_kind(objs, "Role"):
            for g, res, v in _perms(role["rules"]):
                assert "*" not in (g, res, v), role["metadata"]["name"]
                assert v not in {"escalate", "bind", "impersonate"}
                assert res not in {"secrets", "clusterroles", "roles", "clusterrolebindings", "rolebindings"}


def test_rbac_covers_every_kind_and_verb_the_operator_uses() -> None:
    """Independent of voice_operator.rbac: every kind the operator's renderer writes for the chart's resources
    (both profiles, with every optional child switched on) must be creatable, patchable (server-side apply),
    gettable and listable; the resource itself must be watchable and its status patchable."""
    from voice_operator.render import render

    objs = template()
    granted = _bound(objs, "ClusterRole", "ClusterRoleBinding")[""]
    extra = (
        "--set", "voiceGateway.spec.gateway.ingress.enabled=true",
        "--set", "voiceGateway.spec.gateway.ingress.host=voice.example.com",
        "--set", "voiceGateway.spec.gateway.autoscaling.enabled=true",
        "--set", "voiceGateway.spec.modelCache.preDownload=true",
        "--set", "voiceGateway.spec.gateway.replicas=2",
    )  # fmt: skip
    kinds: set[tuple[str, str]] = set()
    for profile in (None, "cpu"):
        vg = one(template(*extra, *values_args(profile)), "VoiceGateway")
        for child in render(vg):
            api = child["apiVersion"]
            group = api.split("/")[0] if "/" in api else ""
            kinds.add((group, child["kind"]))
    from voice_operator.kinds import CHILD_KINDS

    plural = {(k.group, k.kind): k.plural for k in CHILD_KINDS}
    assert {"Ingress", "HorizontalPodAutoscaler", "Job", "Deployment", "Service"} <= {k for _, k in kinds}
    for group, kind in sorted(kinds):
        assert (group, kind) in plural, f"the operator renders {kind} but its kinds table does not list it"
        for verb in ("get", "list", "create", "patch"):
            assert (group, plural[(group, kind)], verb) in granted, (kind, verb)
    for verb in ("get", "list", "watch", "patch"):
        assert ("voice.aetherpro.ai", "voicegateways", verb) in granted
    assert ("voice.aetherpro.ai", "voicegateways/status", "patch") in granted
    assert ("", "events", "create") in granted
