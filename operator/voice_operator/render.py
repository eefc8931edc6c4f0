"""Pure rendering: a VoiceGateway object -> the list of child manifests the operator applies.

No API calls here: `voice-gateway-operator render -f` prints exactly this, the unit tests validate every
manifest against the real Kubernetes schemas, and the reconciler applies it with server-side apply."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from pathlib import PurePosixPath
from typing import Any

import yaml

from voice_operator import API_VERSION, KIND, __version__
from voice_operator import defaults as d
from voice_operator.autoscaling import autoscaler, drain_hook, termination_grace
from voice_operator.deployconfig import render_deploy_config
from voice_operator.plan import DEPLOY_CONFIG_DIR, Plan, build_plan
from voice_operator.spec import InvalidSpec, SpecError

Obj = dict[str, Any]

HASH_ANNOTATION = "voice.aetherpro.ai/config-hash"
MANAGED_BY = "voice-gateway-operator"
VOICES_DIR = "/etc/voice-gateway/voices"  # the gateway's TTS_VOICES_DIR
NO_UID = "00000000-0000-0000-0000-000000000000"  # `render -f` of a file that was never stored
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 63 - len("-model-download-12345678")  # the longest child name suffix


def _has_voices(vg: Obj) -> bool:
    return bool(((vg.get("spec") or {}).get("tts") or {}).get("voices"))


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "voice-gateway",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "voice-gateway",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(name: str, component: str) -> dict[str, str]:
    return {
        k: v
        for k, v in labels(name, component).items()
        if k in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
    }


def child_name(name: str, component: str) -> str:
    return f"{name}-{component}"


def _hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class _Ctx:
    def __init__(self, vg: Obj, apis: Collection[str] | None = None):
        meta = vg.get("metadata") or {}
        self.name: str = meta.get("name", "")
        self.namespace: str = meta.get("namespace") or "default"
        self.uid: str = meta.get("uid") or NO_UID
        errs: list[SpecError] = []
        if not _DNS1035.match(self.name) or len(self.name) > MAX_NAME:
            errs.append(
                SpecError(
                    "metadata.name",
                    f"must be a DNS-1035 label of at most {MAX_NAME} characters (it prefixes Service names)",
                )
            )
        try:
            self.plan: Plan = build_plan(vg, apis, voices_dir=VOICES_DIR if _has_voices(vg) else None)
            self.spec = self.plan.spec
        except InvalidSpec as e:
            raise InvalidSpec(errs + e.errors) from None
        if errs:
            raise InvalidSpec(errs)

    def meta(self, component: str, name: str | None = None, annotations: dict[str, str] | None = None) -> Obj:
        m: Obj = {
            "name": name or child_name(self.name, component),
            "namespace": self.namespace,
            "labels": labels(self.name, component),
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": KIND,
                    "name": self.name,
                    "uid": self.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if annotations:
            m["annotations"] = annotations
        return m

    @property
    def gpu(self) -> bool:
        return self.spec["mode"] == "gpu"

    @property
    def model_servers(self) -> bool:
        return "omni" in self.plan.names


# ---------------------------------------------------------------- pod building blocks

# UID/GID 10001: the user the project's images (images/*/Dockerfile) are built with; fsGroup makes the model
# cache volume writable for it.
_POD_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
_CONTAINER_SECURITY: Obj = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
}


def _cache_volume(c: _Ctx) -> Obj:
    cache = c.spec["modelCache"]
    if not cache["enabled"]:
        return {"name": "model-cache", "emptyDir": {}}
    claim = cache.get("existingClaim") or child_name(c.name, "model-cache")
    return {"name": "model-cache", "persistentVolumeClaim": {"claimName": claim}}


def _writable_volumes() -> tuple[list[Obj], list[Obj]]:
    """/tmp for caches (root filesystem is read-only) and a memory-backed /dev/shm: vLLM-Omni's stages hand
    data to each other through shared memory, far more than the runtime's 64 MiB default."""
    vols = [
        {"name": "tmp", "emptyDir": {}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
    ]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}]
    return vols, mounts


def _resources(block: Obj) -> Obj:
    """requests/limits with every quantity as a string: the CRD accepts `cpu: 1`, but server-side apply's
    typed patch rejects a number where a Quantity is expected."""
    return {k: {r: str(q) for r, q in v.items()} for k, v in (block.get("resources") or {}).items() if v}


def _probe_http(port: str, path: str = "/health", **kw: Any) -> Obj:
    return {"httpGet": {"path": path, "port": port}, **kw}


def _scheduling(block: Obj, pod: Obj, default_tolerations: list[Obj] | None = None) -> None:
    if block.get("nodeSelector"):
        pod["nodeSelector"] = dict(block["nodeSelector"])
    tolerations = block.get("tolerations") or default_tolerations
    if tolerations:
        pod["tolerations"] = list(tolerations)
    if block.get("affinity"):
        pod["affinity"] = block["affinity"]


def _env_list(pairs: dict[str, str], extra: list[Obj] | None) -> list[Obj]:
    env = [{"name": k, "value": v} for k, v in pairs.items()]
    names = {e["name"] for e in extra or []}
    return [e for e in env if e["name"] not in names] + list(extra or [])


def _deployment(
    c: _Ctx,
    component: str,
    pod_spec: Obj,
    replicas: int | None,
    strategy: Obj,
    deadline: int,
    config_hash: str,
) -> Obj:
    template_meta: Obj = {
        "labels": labels(c.name, component),
        "annotations": {
            HASH_ANNOTATION: config_hash,
            "prometheus.io/scrape": "true",
            "prometheus.io/path": "/metrics",
            "prometheus.io/port": str(pod_spec["containers"][0]["ports"][0]["containerPort"]),
        },
    }
    spec: Obj = {
        "selector": {"matchLabels": selector(c.name, component)},
        "strategy": strategy,
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": deadline,
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    if replicas is not None:  # absent while an HPA owns the replica count
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": c.meta(component), "spec": spec}


def _model_server(c: _Ctx, component: str, voices_cm: Obj | None, deploy_cm: Obj | None) -> Obj:
    block = c.spec[component]
    planned = c.plan.component(component)
    port = planned.port
    vols, mounts = _writable_volumes()
    vols.append(_cache_volume(c))
    mounts.append({"name": "model-cache", "mountPath": c.spec["modelCache"]["mountPath"]})
    resources = _resources(block)
    tolerations = None
    if planned.gpu is not None:
        limits = resources.setdefault("limits", {})
        limits[planned.gpu.resource] = str(planned.gpu.count)
        if deploy_cm is None:
            raise ValueError(f"{component}: a GPU model server needs its deploy-config ConfigMap")
        vols.append({"name": "deploy-config", "configMap": {"name": deploy_cm["metadata"]["name"]}})
        mounts.append({"name": "deploy-config", "mountPath": DEPLOY_CONFIG_DIR, "readOnly": True})
        tolerations = [{"key": planned.gpu.resource, "operator": "Exists", "effect": "NoSchedule"}]
    startup_periods = planned.startup_seconds // 10
    image, args, env = planned.image, list(planned.argv), planned.env
    container: Obj = {
        "name": "server",
        "image": image,
        "command": args[:1],
        "args": args[1:],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": _env_list(env, block.get("env")),
        # The servers refuse connections until every stage has loaded, so the startup probe's budget
        # covers a first download and load (60 min for the 26 GB Omni checkpoint); liveness starts after.
        "startupProbe": _probe_http(
            "http", periodSeconds=10, timeoutSeconds=5, failureThreshold=startup_periods
        ),
        "readinessProbe": _probe_http("http", periodSeconds=10, timeoutSeconds=5, failureThreshold=3),
        "livenessProbe": _probe_http("http", periodSeconds=20, timeoutSeconds=10, failureThreshold=3),
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": mounts,
    }
    if block.get("imagePullPolicy"):
        container["imagePullPolicy"] = block["imagePullPolicy"]
    if resources:
        container["resources"] = resources
    pod: Obj = {
        "securityContext": dict(_POD_SECURITY),
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 60,
        "containers": [container],
        "volumes": vols,
    }
    _scheduling(block, pod, tolerations)
    cfg = [
        deploy_cm["data"] if deploy_cm else None,
        voices_cm["data"] if voices_cm and component == "tts" else None,
    ]
    config_hash = _hash(pod, cfg)
    # Recreate: a GPU cannot hold two copies of the model while a rolling update overlaps them.
    return _deployment(
        c,
        component,
        pod,
        block["replicas"],
        {"type": "Recreate"},
        block["progressDeadlineSeconds"],
        config_hash,
    )


def _service(c: _Ctx, component: str, port: int, svc_type: str = "ClusterIP") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": c.meta(component),
        "spec": {
            "type": svc_type,
            "selector": selector(c.name, component),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


_AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")


def _clip_suffix(name: str) -> str:
    """The gateway finds clips by suffix (TTS_VOICES_DIR/<voice>.<wav|flac|mp3|ogg|m4a>)."""
    suffix = PurePosixPath(name.split("?", 1)[0]).suffix.lower()
    return suffix if suffix in _AUDIO_SUFFIXES else ".wav"


def _voices_configmap(c: _Ctx) -> Obj | None:
    """The gateway's voice directory layout: <voice>.txt holds the clip's exact transcript (the Base
    model's ref_text), <voice>.json its language; the clips themselves come from the user's ConfigMaps,
    Secrets or URLs."""
    voices = c.spec["tts"].get("voices") or []
    if not voices:
        return None
    data: dict[str, str] = {}
    for v in voices:
        data[f"{v['name']}.txt"] = v["transcript"]
        if v["language"].lower() != "auto":
            data[f"{v['name']}.json"] = json.dumps({"language": v["language"]})
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": c.meta("voices"), "data": data}


# Copies the mounted voice files and downloads the URL clips into the voices directory (an emptyDir).
_FETCH_VOICES = """import shutil, sys, urllib.request
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for f in src.iterdir():
    if f.is_file():
        shutil.copyfile(f, dst / f.name)
for spec in sys.argv[3:]:
    name, url = spec.split("=", 1)
    print("fetching voice", name, "from", url, flush=True)
    with urllib.request.urlopen(url, timeout=60) as r, open(dst / name, "wb") as out:
        shutil.copyfileobj(r, out)
"""


def _voice_volumes(c: _Ctx) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """(volumes, gateway mounts, init containers). One projected volume holds the transcripts and every
    ConfigMap/Secret clip under its gateway file name; URL clips are fetched by an init container."""
    voices = c.spec["tts"].get("voices") or []
    sources: list[Obj] = [{"configMap": {"name": child_name(c.name, "voices")}}]
    urls: list[str] = []
    for v in voices:
        src = v["audio"]
        if src.get("url"):
            urls.append(f"{v['name']}{_clip_suffix(src['url'])}={src['url']}")
            continue
        ref = src.get("configMapKeyRef") or src.get("secretKeyRef")
        items = [{"key": ref["key"], "path": f"{v['name']}{_clip_suffix(ref['key'])}"}]
        if src.get("configMapKeyRef"):
            sources.append({"configMap": {"name": ref["name"], "items": items}})
        else:
            sources.append({"secret": {"name": ref["name"], "items": items}})
    vols: list[Obj] = [{"name": "voices-src", "projected": {"sources": sources}}]
    if not urls:
        return vols, [{"name": "voices-src", "mountPath": VOICES_DIR, "readOnly": True}], []
    vols.append({"name": "voices", "emptyDir": {}})
    init = {
        "name": "fetch-voices",
        "image": c.spec["gateway"]["image"],
        "command": ["python3", "-c", _FETCH_VOICES, "/etc/voice-gateway/voices-src", VOICES_DIR, *urls],
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": [
            {"name": "voices-src", "mountPath": "/etc/voice-gateway/voices-src", "readOnly": True},
            {"name": "voices", "mountPath": VOICES_DIR},
        ],
    }
    return vols, [{"name": "voices", "mountPath": VOICES_DIR, "readOnly": True}], [init]


def _gateway(c: _Ctx, env_cm: Obj, voices_cm: Obj | None) -> Obj:
    gw = c.spec["gateway"]
    planned = c.plan.component("gateway")
    port = planned.port
    vols, mounts = _writable_volumes()
    init_containers: list[Obj] = []
    if voices_cm:
        v, m, init_containers = _voice_volumes(c)
        vols += v
        mounts += m
    if planned.model_cache:
        vols.append(_cache_volume(c))
        mounts.append({"name": "model-cache", "mountPath": c.spec["modelCache"]["mountPath"]})
    env: list[Obj] = []
    if gw.get("apiKeysSecret"):
        env.append(
            {
                "name": "GATEWAY_API_KEYS",
                "valueFrom": {
                    "secretKeyRef": {"name": gw["apiKeysSecret"]["name"], "key": gw["apiKeysSecret"]["key"]}
                },
            }
        )
    env += list(gw.get("env") or [])
    container: Obj = {
        "name": "gateway",
        "image": planned.image,
        "command": list(planned.argv[:1]),
        "args": list(planned.argv[1:]),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": env_cm["metadata"]["name"]}}],
        # /health is 503 while the engines load: that gates traffic (readiness) but must not restart the
        # pod, so liveness only checks that the process still accepts connections.
        "startupProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5, "failureThreshold": 60},
        "readinessProbe": _probe_http("http", periodSeconds=5, timeoutSeconds=3, failureThreshold=3),
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 20, "failureThreshold": 3},
        "securityContext": dict(_CONTAINER_SECURITY),
        "volumeMounts": mounts,
        # scale-down and rollouts: the pod leaves the Service first, then waits for its conversations
        "lifecycle": drain_hook(port, gw["drainSeconds"]),
    }
    if env:
        container["env"] = env
    if gw.get("imagePullPolicy"):
        container["imagePullPolicy"] = gw["imagePullPolicy"]
    resources = _resources(gw)
    if resources:
        container["resources"] = resources
    pod: Obj = {
        "securityContext": dict(_POD_SECURITY),
        "enableServiceLinks": False,
        # voice sessions are long-lived WebSockets: the drain, then the gateway's own shutdown grace
        "terminationGracePeriodSeconds": termination_grace(gw["drainSeconds"], gw["shutdownGraceSeconds"]),
        "containers": [container],
        **({"initContainers": init_containers} if init_containers else {}),
        "volumes": vols,
    }
    _scheduling(gw, pod)
    config_hash = _hash(pod, env_cm["data"], voices_cm["data"] if voices_cm else None)
    auto = gw["autoscaling"]["enabled"] if gw.get("autoscaling") else False
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    return _deployment(
        c,
        "gateway",
        pod,
        None if auto else gw["replicas"],
        strategy,
        gw["progressDeadlineSeconds"],
        config_hash,
    )


def _gateway_env(c: _Ctx) -> Obj:
    data = dict(c.plan.component("gateway").env)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": c.meta("gateway", child_name(c.name, "gateway-env")),
        "data": data,
    }


def _deploy_configmap(c: _Ctx, component: str) -> Obj:
    body = yaml.safe_dump(render_deploy_config(component, c.spec), sort_keys=False)
    header = (
        f"# vLLM-Omni deploy config for {c.spec[component]['model']}, rendered by voice-gateway-operator "
        f"{__version__} from VoiceGateway {c.namespace}/{c.name}\n"
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": c.meta(component, child_name(c.name, f"{component}-deploy")),
        "data": {"deploy.yaml": header + body},
    }


def _pvc(c: _Ctx) -> Obj | None:
    cache = c.spec["modelCache"]
    if not cache["enabled"] or cache.get("existingClaim"):
        return None
    spec: Obj = {"accessModes": [cache["accessMode"]], "resources": {"requests": {"storage": cache["size"]}}}
    if cache.get("storageClassName"):
        spec["storageClassName"] = cache["storageClassName"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": c.meta("model-cache"),
        "spec": spec,
    }


def _download_job(c: _Ctx) -> Obj | None:
    cache = c.spec["modelCache"]
    if c.plan.download_job is None:
        return None
    models = [c.spec["omni"]["model"], c.spec["tts"]["model"]]
    script = (
        "import sys\nfrom huggingface_hub import snapshot_download\n"
        "for m in sys.argv[1:]:\n    print('downloading', m, flush=True)\n    snapshot_download(m)\n"
    )
    vols, mounts = _writable_volumes()
    vols.append(_cache_volume(c))
    mounts.append({"name": "model-cache", "mountPath": cache["mountPath"]})
    pod: Obj = {
        "restartPolicy": "OnFailure",
        "securityContext": dict(_POD_SECURITY),
        "containers": [
            {
                "name": "download",
                "image": c.spec["omni"].get("image") or d.VLLM_OMNI_IMAGE,
                "command": ["python3", "-c", script, *models],
                "env": [
                    {"name": "HF_HOME", "value": cache["mountPath"]},
                    {"name": "HOME", "value": "/tmp"},
                    {"name": "HF_HUB_ENABLE_HF_TRANSFER", "value": "0"},
                ],
                "securityContext": dict(_CONTAINER_SECURITY),
                "volumeMounts": mounts,
            }
        ],
        "volumes": vols,
    }
    _scheduling(c.spec["omni"], pod)
    meta = c.meta("model-cache", c.plan.download_job)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "backoffLimit": 6,
            "template": {"metadata": {"labels": labels(c.name, "model-cache")}, "spec": pod},
        },
    }


def _ingress(c: _Ctx) -> Obj | None:
    ing = c.spec["gateway"].get("ingress") or {}
    if not ing.get("enabled"):
        return None
    t = str(ing["timeoutSeconds"])
    annotations = {
        # WebSocket voice sessions stay open for minutes: the default 60 s proxy timeouts would cut them.
        "nginx.ingress.kubernetes.io/proxy-read-timeout": t,
        "nginx.ingress.kubernetes.io/proxy-send-timeout": t,
        "nginx.ingress.kubernetes.io/proxy-body-size": "64m",
        "nginx.ingress.kubernetes.io/proxy-buffering": "off",
        "haproxy.org/timeout-tunnel": f"{t}s",
        "traefik.ingress.kubernetes.io/service.serversscheme": "http",
        **(ing.get("annotations") or {}),
    }
    spec: Obj = {
        "rules": [
            {
                "host": ing["host"],
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {
                                    "name": child_name(c.name, "gateway"),
                                    "port": {"number": c.spec["gateway"]["service"]["port"]},
                                }
                            },
                        }
                    ]
                },
            }
        ]
    }
    if ing.get("className"):
        spec["ingressClassName"] = ing["className"]
    if ing.get("tlsSecretName"):
        spec["tls"] = [{"hosts": [ing["host"]], "secretName": ing["tlsSecretName"]}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": c.meta("gateway", annotations=annotations),
        "spec": spec,
    }


def _autoscaler(c: _Ctx, apis: Collection[str] | None) -> Obj | None:
    auto = c.spec["gateway"].get("autoscaling") or {}
    return autoscaler(c.meta("gateway"), child_name(c.name, "gateway"), auto, apis)


def _pdb(c: _Ctx) -> Obj | None:
    gw = c.spec["gateway"]
    auto = gw.get("autoscaling") or {}
    least = auto["minReplicas"] if auto.get("enabled") else gw["replicas"]
    if least < 2:  # a PDB on a single replica would block every node drain
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": c.meta("gateway"),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": selector(c.name, "gateway")}},
    }


def _network_policy(c: _Ctx) -> Obj | None:
    if not c.spec["networkPolicy"]["enabled"] or not c.model_servers:
        return None
    ports = sorted({c.spec["omni"]["port"], c.spec["tts"]["port"]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": c.meta("model-servers"),
        "spec": {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/instance": c.name},
                "matchExpressions": [
                    {"key": "app.kubernetes.io/component", "operator": "In", "values": ["omni", "tts"]}
                ],
            },
            "policyTypes": ["Ingress"],
            "ingress": [
                # only this instance's gateway may call the model servers
                {
                    "from": [{"podSelector": {"matchLabels": selector(c.name, "gateway")}}],
                    "ports": [{"protocol": "TCP", "port": p} for p in ports],
                },
                # ... and Prometheus may scrape their /metrics
                {
                    "from": [
                        {
                            "namespaceSelector": {},
                            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": p} for p in ports],
                },
            ],
        },
    }


def render(vg: Obj, apis: Collection[str] | None = None) -> list[Obj]:
    """All children of a VoiceGateway, in apply order (config before the pods that read it).
    `apis`: the optional group/versions the cluster serves (autoscaling/v2beta2, keda.sh/v1alpha1; None: a
    current cluster without KEDA). Raises InvalidSpec (naming the fields) for a resource that must not be
    reconciled."""
    c = _Ctx(vg, apis)
    out: list[Obj | None] = []
    voices_cm = _voices_configmap(c)
    env_cm = _gateway_env(c)
    out += [env_cm, voices_cm, _pvc(c), _download_job(c)]
    if c.model_servers:
        for comp in ("omni", "tts"):
            deploy_cm = _deploy_configmap(c, comp) if c.gpu else None
            out += [
                deploy_cm,
                _model_server(c, comp, voices_cm, deploy_cm),
                _service(c, comp, c.spec[comp]["port"]),
            ]
    gw = c.spec["gateway"]
    out += [
        _gateway(c, env_cm, voices_cm),
        _service(c, "gateway", gw["service"]["port"], gw["service"]["type"]),
        _ingress(c),
        _autoscaler(c, apis),
        _pdb(c),
        _network_policy(c),
    ]
    return [o for o in out if o is not None]


def endpoint(vg: Obj) -> str:
    c_name = vg["metadata"]["name"]
    ns = vg["metadata"].get("namespace") or "default"
    port = ((vg.get("spec") or {}).get("gateway") or {}).get("service", {}).get("port", d.GATEWAY_PORT)
    return f"http://{child_name(c_name, 'gateway')}.{ns}.svc:{port}"
