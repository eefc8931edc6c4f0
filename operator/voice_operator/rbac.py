"""The RBAC rules the operator needs: exactly the verbs it calls, generated from the child-kind table.
The chart's ClusterRole is generated from `voice-gateway-operator rbac`, and the integration tests run
the operator under a ServiceAccount bound to exactly these rules, so a missing permission fails a test."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from voice_operator import GROUP, PLURAL
from voice_operator.kinds import CHILD_KINDS

Rule = dict[str, Any]


def cluster_scoped_rules() -> list[Rule]:
    """Rules on cluster-scoped objects; a ClusterRole even for a single-namespace install."""
    return [
        # kopf: notice the CRD being installed/changed after start-up (observation of resources).
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        },
        # kopf: in namespace mode it lists/watches namespaces to match the namespace patterns.
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    ]


def namespaced_rules() -> list[Rule]:
    """Rules on namespaced objects: a Role per watched namespace, or part of the ClusterRole."""
    rules: list[Rule] = [
        # kopf watches the resource and keeps its own bookkeeping in annotations (patch).
        {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
        # the operator writes status through the status subresource only.
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
        # children carry ownerReferences with blockOwnerDeletion: clusters running the
        # OwnerReferencesPermissionEnforcement admission plugin require update on the owner's finalizers.
        {"apiGroups": [GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
        # kopf posts Kubernetes events about handler outcomes.
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]
    by_group: dict[tuple[str, tuple[str, ...]], list[str]] = defaultdict(list)
    for k in CHILD_KINDS:
        # get: read status; list: find children to prune; patch: server-side apply (creates too);
        # create: SSA of an absent object is authorized as create as well; watch: kopf on.event.
        verbs = ["get", "list", "create", "patch"]
        if k.prunable:
            verbs.append("delete")
        if k.watched:
            verbs.append("watch")
        if k.plural not in by_group[(k.group, tuple(verbs))]:  # one kind may be served at two versions
            by_group[(k.group, tuple(verbs))].append(k.plural)
    for (group, group_verbs), plurals in by_group.items():
        rules.append({"apiGroups": [group], "resources": sorted(plurals), "verbs": list(group_verbs)})
    return rules


def cluster_rules() -> list[Rule]:
    """Everything, for a cluster-wide install (one ClusterRole)."""
    return cluster_scoped_rules() + namespaced_rules()
