"""The single-host deployment: a VoiceGateway -> a Compose file (the design document's `docker compose up -d`
on one GPU host), from the same plan the Kubernetes renderer follows.

`gpu` mode: the two vLLM-Omni model servers share one card (`GPU_DEVICE`, the seed's default 1), each with
its deploy config (the memory shares: Omni 65 %, TTS 10 %) inlined as a Compose config; the model cache is
the host's `HF_HOME`. `cpu` mode: `voice-gateway engine-server` in the model servers' place, runs anywhere.
Service names and URLs are the seed's (omni-service:8000, tts-service:8001, gateway on 8004)."""

from __future__ import annotations

from typing import Any

import yaml

from voice_operator import __version__
from voice_operator import defaults as d
from voice_operator.deployconfig import render_deploy_config
from voice_operator.plan import DEPLOY_CONFIG, Component, Plan, build_plan

Obj = dict[str, Any]

SERVICE = {"omni": "omni-service", "tts": "tts-service", "gateway": "gateway"}
GPU_DEVICE_DEFAULT = "1"  # the seed's L40S is device 1
HOST_HF_HOME_DEFAULT = "/mnt/aetherpro-extra1/hf"  # the seed's HF_HOME
# Images the user can point elsewhere without editing the file (a local build, a mirror).
IMAGE_VARS = {d.GATEWAY_IMAGE: "VOICE_GATEWAY_IMAGE", d.VLLM_OMNI_IMAGE: "VLLM_OMNI_IMAGE"}
STOP_MARGIN_SECONDS = 10  # after the gateway's SHUTDOWN_GRACE_SECONDS, before Compose kills it


def _url(comp: str, scheme: str, port: int) -> str:
    return f"{scheme}://{SERVICE[comp]}:{port}"


def _image(image: str) -> str:
    var = IMAGE_VARS.get(image)
    return f"${{{var}:-{image}}}" if var else image


def _healthcheck(c: Component) -> Obj:
    # python3 is in both images (curl is in neither); 127.0.0.1: the check runs inside the container
    probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{c.port}{c.health_path}', timeout=5)"
    )
    return {
        "test": ["CMD", "python3", "-c", probe],
        "interval": "10s",
        "timeout": "5s",
        "retries": 3,
        # the whole startup budget (a first model download included) before failures count
        "start_period": f"{c.startup_seconds}s",
    }


def _gpu_devices(capabilities: list[str]) -> Obj:
    return {
        "resources": {
            "reservations": {
                "devices": [
                    {
                        "driver": "nvidia",
                        "device_ids": [f"${{GPU_DEVICE:-{GPU_DEVICE_DEFAULT}}}"],
                        "capabilities": capabilities,
                    }
                ]
            }
        }
    }


def _service(plan: Plan, c: Component) -> Obj:
    spec = plan.spec
    svc: Obj = {
        "image": _image(c.image),
        "entrypoint": list(c.argv[:1]),
        "command": list(c.argv[1:]),
        "environment": dict(c.env),
        "restart": "unless-stopped",
        # as in the cluster: read-only root, writable /tmp (HOME and caches point there)
        "read_only": True,
        "tmpfs": ["/tmp"],
        "healthcheck": _healthcheck(c),
    }
    if c.depends_on:
        svc["depends_on"] = {SERVICE[dep]: {"condition": "service_healthy"} for dep in c.depends_on}
    if c.name == "gateway":
        svc["ports"] = [f"${{GATEWAY_PORT:-{c.port}}}:{c.port}"]
        # no preStop on one host: `docker compose stop` is the gateway's own SIGTERM drain
        svc["stop_grace_period"] = f"{spec['gateway']['shutdownGraceSeconds'] + STOP_MARGIN_SECONDS}s"
        if plan.mode == "gpu":  # NVML only (no compute): the gateway's GPU gauges on the shared card
            svc["deploy"] = _gpu_devices(["utility"])
    else:
        svc["expose"] = [str(c.port)]
        svc["stop_grace_period"] = "60s"
    if c.gpu is not None:
        svc["deploy"] = _gpu_devices(["gpu"])
        # vLLM-Omni's stages hand data over through shared memory (the cluster gives 8 GiB too)
        svc["shm_size"] = "8gb"
    if c.deploy_config:
        svc["configs"] = [{"source": f"{c.name}-deploy", "target": DEPLOY_CONFIG}]
    if c.model_cache and plan.cache_mode != "emptydir":
        svc["volumes"] = [
            {
                "type": "bind",
                "source": f"${{HF_HOME:-{HOST_HF_HOME_DEFAULT}}}",
                "target": spec["modelCache"]["mountPath"],
            }
        ]
    return svc


def _cluster_only(spec: Obj) -> list[str]:
    """Settings that only mean something in a cluster: named in the file's header, not rendered."""
    gw = spec["gateway"]
    notes = []
    if spec["tts"].get("voices"):
        notes.append(
            "spec.tts.voices (clips in ConfigMaps/Secrets/URLs): mount a TTS_VOICES_DIR on the gateway"
        )
    if (gw.get("ingress") or {}).get("enabled"):
        notes.append("spec.gateway.ingress: the gateway is published on GATEWAY_PORT")
    if (gw.get("autoscaling") or {}).get("enabled") or gw["replicas"] != 1:
        notes.append("spec.gateway.replicas/autoscaling: one gateway on one host")
    if spec["modelCache"]["enabled"] and spec["modelCache"]["preDownload"]:
        notes.append("spec.modelCache.preDownload: the model servers download on first start (start_period)")
    return notes


def render_compose(vg: Obj) -> tuple[Obj, list[str]]:
    """(the Compose file of a VoiceGateway, the cluster-only settings it leaves out). Raises InvalidSpec."""
    plan = build_plan(vg, url=_url)
    services = {SERVICE[c.name]: _service(plan, c) for c in plan.components}
    if plan.spec["gateway"].get("apiKeysSecret"):
        # the cluster reads the keys from a Secret; on one host they come from the environment (or .env)
        services["gateway"]["environment"]["GATEWAY_API_KEYS"] = (
            "${GATEWAY_API_KEYS:?set GATEWAY_API_KEYS (comma-separated API keys)}"
        )
    out: Obj = {"name": plan.name, "services": services}
    configs = {
        f"{c.name}-deploy": {
            "content": (
                f"# vLLM-Omni deploy config for {plan.spec[c.name]['model']}, rendered by "
                f"voice-gateway-operator {__version__}\n"
                + yaml.safe_dump(render_deploy_config(c.name, plan.spec), sort_keys=False)
            )
        }
        for c in plan.components
        if c.deploy_config
    }
    if configs:
        out["configs"] = configs
    return out, _cluster_only(plan.spec)


def dump(doc: Obj, notes: list[str], source: str) -> str:
    lines = [
        f"Compose file rendered by `voice-gateway-operator render --format compose -f {source}`.",
        "GENERATED by scripts/sync-generated.py: do not edit by hand (tests/operator checks it).",
        f"Environment: GPU_DEVICE (default {GPU_DEVICE_DEFAULT}), HF_HOME (host model cache, default",
        f"{HOST_HF_HOME_DEFAULT}), GATEWAY_PORT (default {d.GATEWAY_PORT}),",
        "VOICE_GATEWAY_IMAGE, VLLM_OMNI_IMAGE (image overrides), GATEWAY_API_KEYS (where keys are asked).",
    ]
    if notes:
        lines.append("Not rendered on one host:")
        lines += [f"  - {n}" for n in notes]
    header = "".join(f"# {line}\n" for line in lines)
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)
