"""The deployment plan: what runs for a VoiceGateway, decided once.

Every decision about processes (image, command line, environment, port, GPU share, health probe, model
cache, start order) and about optional pieces (model cache mode, download Job, autoscaler kind) is made here.
The Kubernetes renderer (render.py), the status observer (reconcile.observe) and the Compose renderer
(compose.py) read it, so the three cannot disagree. Pure: no API calls."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from voice_operator import defaults as d
from voice_operator.autoscaling import kind_for
from voice_operator.spec import checked

Obj = dict[str, Any]
Url = Callable[[str, str, int], str]  # (component, scheme, port) -> URL

DEPLOY_CONFIG_DIR = "/etc/vllm-omni"
DEPLOY_CONFIG = f"{DEPLOY_CONFIG_DIR}/deploy.yaml"
HEALTH_PATH = "/health"
CPU_STARTUP_SECONDS = 600  # CPU engines ship inside the image: ten minutes is plenty

# Realtime sessions' function tools: vLLM-Omni refuses any tool_choice but "none" without a tool parser, and
# "auto" without --enable-auto-tool-choice; Qwen3 writes hermes-style calls.
OMNI_TOOL_FLAGS = ("--enable-auto-tool-choice", "--tool-call-parser", "hermes")


@dataclass(frozen=True)
class GpuShare:
    resource: str  # the Kubernetes extended resource, e.g. nvidia.com/gpu
    count: int
    memory_fraction: float  # of each card, summed over the server's stages (the seed: 65 % + 10 %)


@dataclass(frozen=True)
class Component:
    name: str  # omni | tts | gateway
    image: str
    argv: tuple[str, ...]
    env: dict[str, str]
    port: int
    startup_seconds: int  # how long the first start may take (a first model download included)
    model_cache: bool  # mounts the model cache at HF_HOME
    gpu: GpuShare | None = None
    deploy_config: bool = False  # reads the vLLM-Omni deploy config at DEPLOY_CONFIG
    depends_on: tuple[str, ...] = ()
    health_path: str = HEALTH_PATH


@dataclass(frozen=True)
class Plan:
    name: str
    namespace: str
    mode: str  # gpu | cpu
    spec: Obj  # the defaulted, validated spec
    components: tuple[Component, ...]
    cache_mode: str  # pvc | existing | emptydir
    download_job: str | None  # name of the model download Job, None when none is wanted
    autoscaler: tuple[str, str] | None  # (apiVersion, kind)

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components)


def _hash(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def download_job_name(name: str, spec: Obj) -> str:
    # A Job's pod template is immutable: a new model set gets a new Job (the old one is pruned).
    return f"{name}-model-download-{_hash(spec['omni']['model'], spec['tts']['model'])[:8]}"


def _model_server(spec: Obj, comp: str) -> Component:
    block = spec[comp]
    port = block["port"]
    env = {
        "HF_HOME": spec["modelCache"]["mountPath"],
        "HOME": "/tmp",
        "XDG_CACHE_HOME": "/tmp/.cache",
        "AUDIO_SAMPLE_RATE": str(spec["audio"]["sampleRate"]),
        "DO_NOT_TRACK": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }
    gpu: GpuShare | None = None
    if spec["mode"] == "gpu":
        g = block["gpu"]
        image = block.get("image") or d.VLLM_OMNI_IMAGE
        argv = [
            "vllm",
            "serve",
            block["model"],
            "--omni",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--deploy-config",
            DEPLOY_CONFIG,
            "--trust-remote-code",
            # The orchestrator's per-stage summaries in the server log; /metrics is filled either way (only
            # --disable-log-stats empties it; tests/real_vllm_omni/test_metrics_names.py scrapes it)
            "--log-stats",
        ]
        if comp == "omni":
            argv += OMNI_TOOL_FLAGS
        # maxModelLen lives on stage 0 of the deploy config only: under --omni a global --max-model-len
        # overrides EVERY stage, and would cut code2wav's 65536 (the whole codec stream) to the thinker's.
        if comp == "tts":
            env["SPEAKER_SAMPLES_DIR"] = "/tmp/speakers"
        gpu = GpuShare(g["resourceName"], g["count"], g["memoryUtilization"])
        startup = d.STARTUP_BUDGET_SECONDS
    else:
        image = block.get("image") or spec["gateway"]["image"]
        argv = ["voice-gateway", "engine-server", "--host", "0.0.0.0", "--port", str(port)]
        startup = CPU_STARTUP_SECONDS
    argv += list(block.get("extraArgs") or [])
    return Component(
        name=comp,
        image=image,
        argv=tuple(argv),
        env=env,
        port=port,
        startup_seconds=startup,
        model_cache=True,
        gpu=gpu,
        deploy_config=gpu is not None,
    )


def gateway_env(spec: Obj, url: Url, voices_dir: str | None) -> dict[str, str]:
    """The gateway's environment; `url(component, scheme, port)` is a model server as the target reaches
    it."""
    env = {
        "VOICE_ENGINE": spec["gateway"]["engine"],
        "AUDIO_SAMPLE_RATE": str(spec["audio"]["sampleRate"]),
        "HF_HOME": spec["modelCache"]["mountPath"],
        "VOICE_GATEWAY_MODE": spec["mode"],
        "SHUTDOWN_GRACE_SECONDS": str(spec["gateway"]["shutdownGraceSeconds"]),
    }
    if spec["mode"] == "gpu":
        # vLLM serves a model under its path by default; in cpu mode the engine-server's own names are
        # left to the gateway's discovery (/v1/models), since spec.*.model names GPU checkpoints.
        env |= {"OMNI_MODEL": spec["omni"]["model"], "TTS_MODEL": spec["tts"]["model"]}
    if spec["gateway"]["engine"] == "vllm-omni":
        env |= {
            "OMNI_SERVICE_URL": url("omni", "http", spec["omni"]["port"]),
            "OMNI_WS_URL": url("omni", "ws", spec["omni"]["port"]),
            "TTS_SERVICE_URL": url("tts", "http", spec["tts"]["port"]),
        }
    if voices_dir:
        env["TTS_VOICES_DIR"] = voices_dir
    return env


def build_plan(
    vg: Obj,
    apis: Collection[str] | None = None,
    url: Url | None = None,
    voices_dir: str | None = None,
) -> Plan:
    """The plan of a VoiceGateway. `url(component, scheme, port)` is how the gateway reaches a model server
    (default: the Kubernetes Service DNS name). Raises InvalidSpec for an invalid spec."""
    meta = vg.get("metadata") or {}
    name, ns = meta.get("name", ""), meta.get("namespace") or "default"
    spec = checked(vg.get("spec"))

    def k8s_url(comp: str, scheme: str, port: int) -> str:
        return f"{scheme}://{name}-{comp}.{ns}.svc:{port}"

    servers = spec["gateway"]["engine"] == "vllm-omni"
    comps = [_model_server(spec, c) for c in ("omni", "tts")] if servers else []
    gw = spec["gateway"]
    gw_port = gw["service"]["port"]
    comps.append(
        Component(
            name="gateway",
            image=gw["image"],
            argv=("voice-gateway", "serve", "--host", "0.0.0.0", "--port", str(gw_port)),
            env=gateway_env(spec, url or k8s_url, voices_dir),
            port=gw_port,
            startup_seconds=300,
            model_cache=not servers,  # embedded engines run inside the gateway and need the cache
            depends_on=("omni", "tts") if servers else (),
        )
    )
    cache = spec["modelCache"]
    cache_mode = "emptydir" if not cache["enabled"] else ("existing" if cache.get("existingClaim") else "pvc")
    want_job = spec["mode"] == "gpu" and servers and cache["enabled"] and cache["preDownload"]
    return Plan(
        name=name,
        namespace=ns,
        mode=spec["mode"],
        spec=spec,
        components=tuple(comps),
        cache_mode=cache_mode,
        download_job=download_job_name(name, spec) if want_job else None,
        autoscaler=kind_for(gw.get("autoscaling") or {}, apis),
    )
