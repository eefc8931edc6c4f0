"""vLLM-Omni stage deploy configs (`--deploy-config`), rendered from the spec.

vLLM-Omni's bundled Qwen3-Omni config spreads the three stages over two GPUs (thinker on GPU 0, talker and
code2wav on GPU 1); the reference deployment runs both models on ONE card (Omni 65 %, TTS 10 %). A global
`--gpu-memory-utilization` flag would apply to every stage, so the per-stage split lives here instead:
stages on the same device share the server's memoryUtilization in proportion to stageMemoryShares.
The other stage fields mirror vLLM-Omni's bundled qwen3_omni_moe.yaml / qwen3_tts.yaml, so the file is
standalone (no base_config lookup that depends on the installed version's layout)."""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

OMNI_SHARES = (0.70, 0.22, 0.08)  # thinker, talker, code2wav
TTS_SHARES = (0.5, 0.5)  # talker, code2wav

_OMNI_STAGES: list[dict[str, Any]] = [
    {
        "stage_id": 0,
        "max_num_batched_tokens": 32768,
        "max_num_seqs": 64,
        "trust_remote_code": True,
        "enable_prefix_caching": False,
        "default_sampling_params": {
            "temperature": 0.4,
            "top_p": 0.9,
            "top_k": 1,
            "max_tokens": 2048,
            "seed": 42,
            "repetition_penalty": 1.05,
        },
    },
    {
        "stage_id": 1,
        "max_num_batched_tokens": 32768,
        "max_num_seqs": 64,
        "trust_remote_code": True,
        "enable_prefix_caching": False,
        "input_connectors": {"from_stage_0": "connector_of_shared_memory"},
        "default_sampling_params": {
            "temperature": 0.9,
            "top_k": 50,
            "max_tokens": 4096,
            "seed": 42,
            "repetition_penalty": 1.05,
        },
    },
    {
        "stage_id": 2,
        "max_num_batched_tokens": 51200,
        "max_num_seqs": 64,
        "enforce_eager": True,
        "trust_remote_code": True,
        "enable_prefix_caching": False,
        "async_scheduling": False,
        "input_connectors": {"from_stage_1": "connector_of_shared_memory"},
        "default_sampling_params": {
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": -1,
            "max_tokens": 65536,
            "seed": 42,
            "repetition_penalty": 1.1,
        },
    },
]
_OMNI_CONNECTORS = {
    "connector_of_shared_memory": {
        "name": "SharedMemoryConnector",
        "extra": {"codec_chunk_frames": 25, "codec_left_context_frames": 25},
    }
}

_TTS_STAGES: list[dict[str, Any]] = [
    {
        "stage_id": 0,
        "max_num_seqs": 64,
        "trust_remote_code": True,
        "enable_prefix_caching": False,
        "async_scheduling": True,
        "max_num_batched_tokens": 32768,
        "max_model_len": 4096,
        "output_connectors": {"to_stage_1": "connector_of_shared_memory"},
        "default_sampling_params": {
            "temperature": 0.9,
            "top_k": 50,
            "max_tokens": 4096,
            "min_tokens": 2,
            "repetition_penalty": 1.05,
        },
        "subtalker_sampling_params": {"do_sample": True, "temperature": 0.9, "top_k": 50, "top_p": 1.0},
    },
    {
        "stage_id": 1,
        "max_num_seqs": 64,
        "enforce_eager": False,
        "trust_remote_code": True,
        "enable_prefix_caching": False,
        "async_scheduling": True,
        "max_num_batched_tokens": 65536,
        "max_model_len": 65536,
        "input_connectors": {"from_stage_0": "connector_of_shared_memory"},
        "default_sampling_params": {
            "temperature": 0.0,
            "top_p": 1.0,
            "top_k": -1,
            "max_tokens": 65536,
            "repetition_penalty": 1.0,
        },
    },
]
# The bundled qwen3_tts.yaml also lists connector_get_sleep_s / connector_get_max_wait(_first_chunk), which
# vLLM-Omni 0.30.0 reads nowhere (tests/operator/test_vllm_omni_accepts.py checks every key against it).
_TTS_CONNECTORS = {
    "connector_of_shared_memory": {
        "name": "SharedMemoryConnector",
        "extra": {
            "codec_streaming": True,
            "codec_chunk_frames": 25,
            "codec_left_context_frames": 72,
            "initial_codec_chunk_frames": 1,
        },
    }
}


def stage_layout(
    n_stages: int, gpus: int, memory: float, shares: list[float] | tuple[float, ...]
) -> list[tuple[str, float]]:
    """(device, gpu_memory_utilization) per stage. One GPU: all stages on "0". Two or more: stage 0 (the
    first autoregressive stage) alone on "0" and the rest on "1" — vLLM-Omni allows one AR stage per chip."""
    devices = ["0"] * n_stages if gpus <= 1 else ["0"] + ["1"] * (n_stages - 1)
    per_device: dict[str, float] = defaultdict(float)
    for dev, share in zip(devices, shares, strict=True):
        per_device[dev] += share
    return [
        (dev, round(memory * share / per_device[dev], 4)) for dev, share in zip(devices, shares, strict=True)
    ]


def render_deploy_config(component: str, spec: dict[str, Any]) -> dict[str, Any]:
    block = spec[component]
    stages = copy.deepcopy(_OMNI_STAGES if component == "omni" else _TTS_STAGES)
    shares = block.get("stageMemoryShares") or (OMNI_SHARES if component == "omni" else TTS_SHARES)
    gpu = block["gpu"]
    for stage, (dev, mem) in zip(
        stages, stage_layout(len(stages), gpu["count"], gpu["memoryUtilization"], shares), strict=True
    ):
        stage["devices"] = dev
        stage["gpu_memory_utilization"] = mem
        if block.get("maxModelLen") and stage["stage_id"] == 0:
            stage["max_model_len"] = block["maxModelLen"]
    return {
        "async_chunk": True,  # streaming audio needs it (and the realtime path requires it)
        "connectors": copy.deepcopy(_OMNI_CONNECTORS if component == "omni" else _TTS_CONNECTORS),
        "stages": stages,
    }
