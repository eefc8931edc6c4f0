"""The child kinds the operator writes. One table feeds the renderer, the API layer (paths, pruning,
served-kind discovery) and the RBAC rules, so a new child kind cannot be written without its permission."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    watched: bool = False  # the operator watches it (kopf on.event) to react to deletion / status
    prunable: bool = True  # deleted when no longer desired (PVCs never are: they hold the model cache)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        p = f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{p}/{name}" if name else p


CHILD_KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "ConfigMap", "configmaps", watched=True),
    Kind("", "v1", "Service", "services", watched=True),
    Kind("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", prunable=False),
    Kind("apps", "v1", "Deployment", "deployments", watched=True),
    Kind("batch", "v1", "Job", "jobs"),
    Kind("networking.k8s.io", "v1", "Ingress", "ingresses"),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    Kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    # the same objects as served by 1.20-1.22 control planes (autoscaling/v2 arrived in 1.23)
    Kind("autoscaling", "v2beta2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    # KEDA, when installed: its ScaledObject then owns the gateway's HPA
    Kind("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects"),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
)

BY_KIND: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in CHILD_KINDS}


def kind_of(obj: dict) -> Kind:
    return BY_KIND[(obj["apiVersion"], obj["kind"])]
