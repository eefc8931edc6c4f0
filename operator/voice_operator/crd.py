"""The VoiceGateway CustomResourceDefinition, built in code: the one source for `voice-gateway-operator crd`,
the chart's copy, the operator's own defaulting (`spec.with_defaults`) and the tests' jsonschema checks."""

from __future__ import annotations

import copy
from typing import Any

from voice_operator import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from voice_operator import defaults as d

Schema = dict[str, Any]


def _str(desc: str, default: str | None = None, **kw: Any) -> Schema:
    s: Schema = {"type": "string", "description": desc, **kw}
    if default is not None:
        s["default"] = default
    return s


def _int(
    desc: str, default: int | None = None, minimum: int | None = None, maximum: int | None = None
) -> Schema:
    s: Schema = {"type": "integer", "description": desc}
    if default is not None:
        s["default"] = default
    if minimum is not None:
        s["minimum"] = minimum
    if maximum is not None:
        s["maximum"] = maximum
    return s


def _bool(desc: str, default: bool) -> Schema:
    return {"type": "boolean", "description": desc, "default": default}


def _obj(desc: str, props: dict[str, Schema], required: list[str] | None = None, **kw: Any) -> Schema:
    s: Schema = {"type": "object", "description": desc, "properties": props, **kw}
    if required:
        s["required"] = required
    return s


def _opaque(desc: str) -> Schema:
    """A Kubernetes core type (affinity, toleration, env var) passed through verbatim; the apiserver
    validates it when the child is written, so repeating its whole schema here would only drift."""
    return {"type": "object", "description": desc, "x-kubernetes-preserve-unknown-fields": True}


def _str_map(desc: str) -> Schema:
    return {"type": "object", "description": desc, "additionalProperties": {"type": "string"}}


_QUANTITY: Schema = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
}


def _resources() -> Schema:
    return _obj(
        "Container resources (requests/limits). GPU limits come from `gpu`, not from here.",
        {
            "requests": {"type": "object", "additionalProperties": _QUANTITY},
            "limits": {"type": "object", "additionalProperties": _QUANTITY},
        },
    )


def _scheduling() -> dict[str, Schema]:
    return {
        "nodeSelector": _str_map("Node labels the pods must match."),
        "tolerations": {
            "type": "array",
            "description": "Pod tolerations.",
            "items": _opaque("A toleration."),
        },
        "affinity": _opaque("Pod affinity (core/v1 Affinity)."),
    }


def _env() -> Schema:
    item = _opaque("A core/v1 EnvVar (name plus value or valueFrom).")
    item["required"] = ["name"]
    item["properties"] = {"name": {"type": "string", "minLength": 1}}
    return {"type": "array", "description": "Extra environment variables.", "items": item}


def _key_ref(desc: str) -> Schema:
    return _obj(
        desc,
        {"name": _str("Object name.", minLength=1), "key": _str("Key in the object.", minLength=1)},
        required=["name", "key"],
    )


def _model_server(name: str, model: str, port: int, mem: float, extra: dict[str, Schema]) -> Schema:
    gpu = _obj(
        "GPUs for this server (gpu mode only). A time-slicing or MIG resource name lets both servers "
        "share one card, as the reference deployment does (Omni 65 %, TTS 10 % of one L40S).",
        {
            "count": _int("GPUs per replica.", 1, 1, 16),
            "resourceName": _str("Extended resource to request.", d.GPU_RESOURCE, minLength=1),
            "memoryUtilization": {
                "type": "number",
                "description": "Share of each GPU's memory this server may use "
                "(vLLM --gpu-memory-utilization), split over its stages.",
                "default": mem,
                "exclusiveMinimum": True,
                "minimum": 0,
                "maximum": 1,
            },
        },
    )
    props: dict[str, Schema] = {
        "model": _str(f"Hugging Face model id of the {name} model.", model, minLength=1),
        "image": _str(
            "Container image. Default: the vLLM-Omni image in gpu mode, the gateway image "
            "(`voice-gateway engine-server`) in cpu mode."
        ),
        "imagePullPolicy": _str("Image pull policy.", enum=["Always", "IfNotPresent", "Never"]),
        "replicas": _int("Replicas.", 1, 0, 64),
        "port": _int("HTTP port of the server.", port, 1, 65535),
        "gpu": gpu,
        "stageMemoryShares": {
            "type": "array",
            "description": "Relative memory share of each pipeline stage on a shared GPU "
            "(default Omni thinker/talker/code2wav 0.70/0.22/0.08, TTS talker/code2wav 0.5/0.5).",
            "items": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
            "minItems": 1,
            "maxItems": 8,
        },
        "maxModelLen": _int(
            "Longest context of the first stage (thinker / talker): `max_model_len` of stage 0 in the "
            "deploy config. Not passed as --max-model-len, which would cut every stage.",
            None,
            256,
        ),
        "resources": _resources(),
        "extraArgs": {"type": "array", "description": "Extra server arguments.", "items": {"type": "string"}},
        "env": _env(),
        "progressDeadlineSeconds": _int(
            "Seconds a rollout may take before it counts as stuck (Degraded). Above the 60 min load budget.",
            d.MODEL_PROGRESS_DEADLINE,
            1,
        ),
        **_scheduling(),
        **extra,
    }
    return _obj(f"The {name} model server.", props, default={})


def _voices() -> Schema:
    source = _obj(
        "Where the reference clip comes from: exactly one of configMapKeyRef, secretKeyRef or url.",
        {
            "configMapKeyRef": _key_ref("Clip in a ConfigMap (binaryData)."),
            "secretKeyRef": _key_ref("Clip in a Secret."),
            "url": _str("http(s) URL of the clip.", pattern="^https?://"),
        },
    )
    voice = _obj(
        "A voice for the TTS Base model, cloned from a reference clip and its transcript.",
        {
            "name": _str("Voice name clients ask for.", pattern="^[a-z0-9]([-a-z0-9_]{0,62})$"),
            "transcript": _str("Exact transcript of the clip (Base model's ref_text).", minLength=1),
            "language": _str("Language of the clip.", "Auto"),
            "audio": source,
        },
        required=["name", "transcript", "audio"],
    )
    return {
        "type": "array",
        "description": "Reference voices (Qwen3-TTS Base has no built-in voices).",
        "items": voice,
        "maxItems": 64,
    }


def spec_schema() -> Schema:
    gateway = _obj(
        "The gateway (HTTP + WebSocket API on port 8004).",
        {
            "image": _str("Gateway image.", d.GATEWAY_IMAGE, minLength=1),
            "imagePullPolicy": _str("Image pull policy.", enum=["Always", "IfNotPresent", "Never"]),
            "engine": _str(
                "Engine the gateway uses: `vllm-omni` (the model servers; also in cpu mode, where "
                "engine-server speaks their API) or `embedded` (in-process CPU engines, no model "
                "servers).",
                "vllm-omni",
            ),
            "replicas": _int("Replicas (ignored while autoscaling is enabled).", 1, 0, 100),
            "resources": _resources(),
            "env": _env(),
            "apiKeysSecret": _key_ref("Secret key holding GATEWAY_API_KEYS (comma-separated)."),
            "service": _obj(
                "The gateway Service.",
                {
                    "type": _str(
                        "Service type.", "ClusterIP", enum=["ClusterIP", "NodePort", "LoadBalancer"]
                    ),
                    "port": _int("Service and container port.", d.GATEWAY_PORT, 1, 65535),
                },
                default={},
            ),
            "ingress": _obj(
                "Optional Ingress with WebSocket-friendly timeouts.",
                {
                    "enabled": _bool("Render an Ingress.", False),
                    "host": _str("Host name."),
                    "className": _str("IngressClass name."),
                    "tlsSecretName": _str("TLS Secret; enables TLS for the host."),
                    "timeoutSeconds": _int(
                        "Proxy read/send timeout, long enough for voice sessions.", 3600, 1
                    ),
                    "annotations": _str_map("Extra Ingress annotations."),
                },
            ),
            "autoscaling": _obj(
                "Scale the gateway on open conversations per pod: a HorizontalPodAutoscaler on a Pods "
                "metric (custom metrics API, e.g. prometheus-adapter), or a KEDA ScaledObject when the "
                "cluster serves keda.sh/v1alpha1.",
                {
                    "enabled": _bool("Render an autoscaler.", False),
                    "minReplicas": _int("Minimum replicas.", 1, 1),
                    "maxReplicas": _int("Maximum replicas.", 4, 1),
                    "targetSessionsPerPod": _int(
                        "Target average of open sessions (WebSockets and streams) per gateway pod.",
                        d.TARGET_SESSIONS_PER_POD,
                        1,
                    ),
                    "metricName": _str(
                        "Per-pod metric of open sessions, as the custom metrics API serves it.",
                        d.SESSIONS_METRIC,
                        minLength=1,
                    ),
                    "targetCPUUtilizationPercentage": _int(
                        "Optional second target: average CPU utilization (unset: sessions only).",
                        None,
                        1,
                        100,
                    ),
                    "keda": _obj(
                        "KEDA ScaledObject settings (used only when the cluster serves keda.sh/v1alpha1).",
                        {
                            "enabled": _bool("Prefer a KEDA ScaledObject when KEDA is installed.", True),
                            "prometheusServerAddress": _str(
                                "Prometheus that scrapes the gateway pods (KEDA's prometheus trigger).",
                                d.PROMETHEUS_ADDRESS,
                                pattern="^https?://",
                            ),
                        },
                        default={},
                    ),
                },
            ),
            "drainSeconds": _int(
                "On scale-down or rollout, how long a terminating pod waits for its open conversations "
                "to end (preStop) before the gateway's own shutdown.",
                d.GATEWAY_DRAIN_SECONDS,
                0,
                86400,
            ),
            "shutdownGraceSeconds": _int(
                "The gateway's SHUTDOWN_GRACE_SECONDS: in-flight HTTP requests get this long after SIGTERM.",
                d.GATEWAY_SHUTDOWN_GRACE_SECONDS,
                0,
                3600,
            ),
            "progressDeadlineSeconds": _int(
                "Seconds a rollout may take before it counts as stuck.", d.GATEWAY_PROGRESS_DEADLINE, 1
            ),
            **_scheduling(),
        },
        default={},
    )
    cache = _obj(
        "Model cache volume, mounted at HF_HOME in every model server.",
        {
            "enabled": _bool("Use a persistent volume (otherwise an emptyDir).", True),
            "existingClaim": _str("Use this PVC instead of creating one."),
            "size": _str(
                "Size of the created PVC.", d.CACHE_SIZE, pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi)?$"
            ),
            "storageClassName": _str("Storage class of the created PVC."),
            "accessMode": _str(
                "Access mode; ReadWriteMany when replicas spread over nodes.",
                "ReadWriteOnce",
                enum=["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany"],
            ),
            "mountPath": _str("Mount path, also HF_HOME.", d.HF_HOME, pattern="^/"),
            "preDownload": _bool(
                "Run a Job that downloads both models first, so servers start warm (gpu mode).", False
            ),
        },
        default={},
    )
    return _obj(
        "Desired state of the voice stack.",
        {
            "mode": _str(
                "gpu: vLLM-Omni model servers; cpu: `voice-gateway engine-server` in their place.",
                "gpu",
                enum=["gpu", "cpu"],
            ),
            "omni": _model_server("Omni", d.OMNI_MODEL, d.OMNI_PORT, d.OMNI_GPU_MEMORY, {}),
            "tts": _model_server("TTS", d.TTS_MODEL, d.TTS_PORT, d.TTS_GPU_MEMORY, {"voices": _voices()}),
            "gateway": gateway,
            "modelCache": cache,
            "audio": _obj(
                "Audio settings.",
                {
                    "sampleRate": _int("Sample rate (Hz) of PCM audio.", d.SAMPLE_RATE, 8000, 48000),
                },
                default={},
            ),
            "networkPolicy": _obj(
                "NetworkPolicy letting only the gateway reach the model servers.",
                {
                    "enabled": _bool("Render the NetworkPolicy.", True),
                },
                default={},
            ),
        },
    )


def _condition() -> Schema:
    return _obj(
        "A Kubernetes-style condition.",
        {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer"},
        },
        required=["type", "status"],
    )


def status_schema() -> Schema:
    replicas = _obj(
        "Replica counts.",
        {"ready": {"type": "integer"}, "desired": {"type": "integer"}, "updated": {"type": "integer"}},
    )
    return _obj(
        "Observed state, written by the operator.",
        {
            "phase": {"type": "string", "enum": ["Pending", "Progressing", "Ready", "Degraded", "Invalid"]},
            "observedGeneration": {"type": "integer"},
            "ready": {"type": "string", "description": "Ready/desired replicas over all components."},
            "endpoint": {"type": "string", "description": "In-cluster URL of the gateway."},
            "message": {"type": "string"},
            "conditions": {
                "type": "array",
                "items": _condition(),
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
            "components": _obj(
                "Per-component replicas.", {"omni": replicas, "tts": replicas, "gateway": replicas}
            ),
            "unservedKinds": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Children skipped because the cluster does not serve their kind.",
            },
            "autoscaler": _obj(
                "The gateway's autoscaler, as observed (absent while autoscaling is off).",
                {
                    "kind": {"type": "string", "description": "apiVersion and kind rendered."},
                    "name": {"type": "string"},
                    "found": {"type": "boolean", "description": "The object exists in the cluster."},
                    "currentReplicas": {"type": "integer"},
                    "desiredReplicas": {"type": "integer"},
                },
            ),
        },
    )


def build_crd() -> dict[str, Any]:
    schema = _obj(
        "VoiceGateway: the Omni model server, the TTS model server and the gateway.",
        {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        required=["spec"],
    )
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "voice-gateway-operator",
                "app.kubernetes.io/part-of": "voice-gateway",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": PLURAL,
                "singular": SINGULAR,
                "kind": KIND,
                "listKind": f"{KIND}List",
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "voice"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                        {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 0},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def openapi_schema() -> Schema:
    """The CRD's openAPIV3Schema (a copy)."""
    return copy.deepcopy(build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def json_schema() -> Schema:
    """The openAPIV3Schema as draft-4-style JSON Schema for the `jsonschema` package: the Kubernetes
    extensions are dropped, int-or-string stays an anyOf, and boolean exclusiveMinimum becomes a number."""

    def conv(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: conv(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
            if out.get("exclusiveMinimum") is True:
                out["exclusiveMinimum"] = out.pop("minimum")
            if node.get("x-kubernetes-preserve-unknown-fields") and "type" not in out:
                out["type"] = "object"
            return out
        if isinstance(node, list):
            return [conv(v) for v in node]
        return node

    return conv(openapi_schema())
