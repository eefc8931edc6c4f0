"""A stand-in for NVML's Python binding (`pynvml`, from nvidia-ml-py) with one simulated 46 GB GPU.

Only the dashboard test puts this directory on the gateway's PYTHONPATH, so the gateway's real GPU code path
(gateway/gpu.py) runs and exports its GPU gauges on a machine without a GPU. The figures move with time so
panels show a live series.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

_TOTAL = 46068 * 1024 * 1024  # an L40S
_COUNT = 2  # GPU_DEVICE defaults to 1, as on the seed's host


def nvmlInit() -> None:
    return None


def nvmlShutdown() -> None:
    return None


def nvmlDeviceGetCount() -> int:
    return _COUNT


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if not 0 <= index < _COUNT:
        raise ValueError(f"no GPU {index}")
    return index


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:
    return SimpleNamespace(gpu=40 + int(time.time()) % 20, memory=30)


def nvmlDeviceGetMemoryInfo(handle: int) -> SimpleNamespace:
    used = int(_TOTAL * 0.75)
    return SimpleNamespace(total=_TOTAL, used=used, free=_TOTAL - used)


def nvmlDeviceGetName(handle: int) -> str:
    return "NVIDIA L40S (simulated)"
