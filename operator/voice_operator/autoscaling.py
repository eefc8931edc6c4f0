"""Gateway autoscaling on open conversations (not CPU), and the drain that keeps scale-down from cutting one.

A gateway pod is limited by its open WebSockets and streams (`voice_gateway_active_streams`), so the
autoscaler targets an average of open sessions per pod: a HorizontalPodAutoscaler on a Pods metric (served
by a custom metrics adapter), or a KEDA ScaledObject querying Prometheus when the cluster serves
keda.sh/v1alpha1. Like every optional kind, which one is rendered depends on what the cluster serves:
`apis` is the set of served group/versions (None: a current cluster without KEDA, as `render -f` shows)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

Obj = dict[str, Any]

HPA_V2 = "autoscaling/v2"
HPA_V2BETA2 = "autoscaling/v2beta2"  # what a 1.20 to 1.22 control plane serves
KEDA = "keda.sh/v1alpha1"
DRAIN_POLL_SECONDS = 2
# Endpoint removal reaches kube-proxies and ingresses a moment after a pod starts terminating: sessions
# may still arrive that long, so the drain never ends sooner.
DRAIN_SETTLE_SECONDS = 3
# After the drain, SIGTERM: the gateway closes what is left (5 s close handshake) and gives in-flight HTTP
# its SHUTDOWN_GRACE_SECONDS; this margin keeps the kubelet's SIGKILL after all of it.
KILL_MARGIN_SECONDS = 10

# preStop hook, run with the gateway image's python3: wait until the pod's open sessions (the sum of
# voice_gateway_active_streams on its own /metrics) reach zero, at most the drain budget. A gateway that
# no longer answers has nothing to drain; metrics it refuses to show (METRICS_REQUIRE_AUTH without a key)
# mean the count is unknown, so the whole budget is waited.
DRAIN_SCRIPT = """import os, sys, time, urllib.error, urllib.request
port, budget, settle, poll = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
keys = [k.strip() for k in os.environ.get("GATEWAY_API_KEYS", "").split(",") if k.strip()]
headers = {"Authorization": "Bearer " + keys[0]} if keys else {}
start = time.monotonic()
time.sleep(min(settle, budget))
while time.monotonic() - start < budget:
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        print("drain: /metrics answered", e.code, "- waiting out the budget", flush=True)
        time.sleep(max(0.0, budget - (time.monotonic() - start)))
        break
    except OSError:
        break
    sessions = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("voice_gateway_active_streams{")
    )
    print("drain:", int(sessions), "open sessions", flush=True)
    if sessions <= 0:
        break
    time.sleep(poll)
"""


def drain_hook(port: int, drain_seconds: int) -> Obj:
    """The gateway container's lifecycle: preStop waits for its conversations to end."""
    cmd = ["python3", "-c", DRAIN_SCRIPT, str(port), str(drain_seconds)]
    cmd += [str(DRAIN_SETTLE_SECONDS), str(DRAIN_POLL_SECONDS)]
    return {"preStop": {"exec": {"command": cmd}}}


def termination_grace(drain_seconds: int, shutdown_grace_seconds: int) -> int:
    return drain_seconds + shutdown_grace_seconds + KILL_MARGIN_SECONDS


def _behavior() -> Obj:
    # Scale up at once (a burst of calls), down slowly and one pod at a time: each pod leaving drains
    # its conversations first, so a flapping target would keep pods terminating for minutes.
    return {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}],
        },
    }


def kind_for(auto: Obj, apis: Collection[str] | None) -> tuple[str, str] | None:
    """(apiVersion, kind) of the autoscaler to render, None when autoscaling is off."""
    if not auto.get("enabled"):
        return None
    if apis is not None and KEDA in apis and (auto.get("keda") or {}).get("enabled", True):
        return KEDA, "ScaledObject"
    if apis is None or HPA_V2 in apis or HPA_V2BETA2 not in apis:
        return HPA_V2, "HorizontalPodAutoscaler"  # an unserved v2 is reported as such in status
    return HPA_V2BETA2, "HorizontalPodAutoscaler"


def autoscaler(meta: Obj, deployment: str, auto: Obj, apis: Collection[str] | None) -> Obj | None:
    chosen = kind_for(auto, apis)
    if chosen is None:
        return None
    api_version, kind = chosen
    target = auto["targetSessionsPerPod"]
    if kind == "ScaledObject":
        ns = meta["namespace"]
        # the gateway Deployment's pods: <deployment>-<replicaset hash>-<pod suffix>
        query = f'sum({auto["metricName"]}{{namespace="{ns}",pod=~"{deployment}-[a-z0-9]+-[a-z0-9]+"}})'
        triggers: list[Obj] = [
            {
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": auto["keda"]["prometheusServerAddress"],
                    "query": query,
                    "threshold": str(target),
                },
            }
        ]
        if auto.get("targetCPUUtilizationPercentage"):
            triggers.append(
                {
                    "type": "cpu",
                    "metricType": "Utilization",
                    "metadata": {"value": str(auto["targetCPUUtilizationPercentage"])},
                }
            )
        return {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
                "minReplicaCount": auto["minReplicas"],
                "maxReplicaCount": auto["maxReplicas"],
                "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
                "triggers": triggers,
            },
        }
    metrics: list[Obj] = [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": auto["metricName"]},
                "target": {"type": "AverageValue", "averageValue": str(target)},
            },
        }
    ]
    if auto.get("targetCPUUtilizationPercentage"):
        metrics.append(
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": auto["targetCPUUtilizationPercentage"],
                    },
                },
            }
        )
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": auto["minReplicas"],
            "maxReplicas": auto["maxReplicas"],
            "metrics": metrics,
            "behavior": _behavior(),
        },
    }
