"""GPU statistics for GPU_DEVICE through NVML; an honest "no GPU" where NVML is absent."""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuStats:
    available: bool
    index: int
    name: str | None = None
    utilization_percent: float | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("available", "index")}


class GpuMonitor:
    def __init__(self, index: int) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._initialised = False
        self._failure: str | None = None

    def _init(self) -> bool:
        if self._initialised:
            return True
        if self._failure is not None:
            return False
        try:
            import pynvml

            pynvml.nvmlInit()
            self._initialised = True
        except Exception as exc:  # NVMLError_LibraryNotFound, driver errors: report, never crash
            self._failure = f"NVML unavailable: {exc.__class__.__name__}: {exc}".strip()
            log.info("no GPU statistics: %s", self._failure)
        return self._initialised

    def read(self) -> GpuStats:
        with self._lock:
            if not self._init():
                return GpuStats(available=False, index=self.index, reason=self._failure)
            try:
                import pynvml

                count = pynvml.nvmlDeviceGetCount()
                if self.index >= count:
                    return GpuStats(
                        False, self.index, reason=f"GPU_DEVICE={self.index} but {count} GPU(s) visible"
                    )
                handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
                util = pynvml.nvmlDeviceGetUtilizationRates(handle)
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                name = pynvml.nvmlDeviceGetName(handle)
                return GpuStats(
                    available=True,
                    index=self.index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    utilization_percent=float(util.gpu),
                    memory_used_mb=round(mem.used / 1024 / 1024, 1),
                    memory_total_mb=round(mem.total / 1024 / 1024, 1),
                )
            except Exception as exc:
                return GpuStats(False, self.index, reason=f"NVML query failed: {exc}")
