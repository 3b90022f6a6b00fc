"""The GPU memory a process really uses, from NVML (the driver), not from torch's allocator.

Genesis keeps its simulation state in its own CUDA buffers (Quadrants fields), outside torch's
caching allocator, so ``torch.cuda.memory_reserved()`` under-reports the worker. NVML's
per-process ``usedGpuMemory`` counts every allocation of the process's CUDA contexts (plus the
context itself). :class:`GpuMemProbe` reads it for one pid, summed over all devices, and keeps the
peak of its readings; torch's reserved figure is kept beside it, separately.

``read()`` returns None when it cannot be known: no ``pynvml`` module, no NVIDIA driver (NVML init
fails), or an NVML call failing, or the process using CUDA but absent from NVML's lists (a
container whose PID namespace differs from the driver's). It returns 0.0 when NVML works and the
process has no GPU memory. It never raises. Imported by the worker only (not the supervisor).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any


def _mib(x: Any) -> float | None:
    try:
        return None if x is None else float(x) / 2**20
    except (TypeError, ValueError):
        return None


class GpuMemProbe:
    LISTS = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")

    def __init__(self, pid: int | None = None):
        self.pid = os.getpid() if pid is None else pid
        self._nvml: Any = None
        self._tried = False
        self._lock = threading.Lock()
        self.error: str | None = None  # why the last reading is None
        self.peak_mb: float | None = None
        self.peak_torch_mb: float | None = None

    def _init(self) -> Any:
        if self._tried:
            return self._nvml
        self._tried = True
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - no module, no library, no driver: unknown
            self.error = f"NVML unavailable: {type(exc).__name__}: {exc}"
            self._nvml = None
        return self._nvml

    def read(self) -> float | None:
        """MiB of GPU memory used by the process now (NVML), or None; updates the peak."""
        with self._lock:
            mb = self._read()
            if mb is not None:
                self.peak_mb = mb if self.peak_mb is None else max(self.peak_mb, mb)
            t = torch_reserved_mb()
            if t is not None:
                self.peak_torch_mb = t if self.peak_torch_mb is None else max(self.peak_torch_mb, t)
            return mb

    def _read(self) -> float | None:
        nv = self._init()
        if nv is None:
            return None
        try:
            total, found = 0.0, False
            for i in range(nv.nvmlDeviceGetCount()):
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                on_device: float | None = None
                for fn in self.LISTS:  # a process with compute and graphics contexts is listed twice
                    try:
                        procs = getattr(nv, fn)(handle)
                    except Exception:  # noqa: BLE001 - e.g. NVML_ERROR_NOT_SUPPORTED for one list
                        continue
                    for p in procs:
                        if int(getattr(p, "pid", -1)) != self.pid:
                            continue
                        found = True
                        used = _mib(getattr(p, "usedGpuMemory", None))
                        if used is None:  # NVML_VALUE_NOT_AVAILABLE
                            self.error = "NVML lists the process without its memory"
                            return None
                        on_device = used if on_device is None else max(on_device, used)
                total += on_device or 0.0
        except Exception as exc:  # noqa: BLE001
            self.error = f"NVML error: {type(exc).__name__}: {exc}"
            return None
        if not found and _cuda_in_use():
            self.error = f"pid {self.pid} not in NVML's process lists (another PID namespace?)"
            return None
        self.error = None
        return round(total, 1)

    def close(self) -> None:
        with self._lock:
            if self._nvml is not None:
                try:
                    self._nvml.nvmlShutdown()
                except Exception:  # noqa: BLE001
                    pass
            self._nvml, self._tried = None, False


def _cuda_in_use() -> bool:
    torch = sys.modules.get("torch")  # never imported here: only asked when the worker has it
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001
        return False


def torch_reserved_mb() -> float | None:
    """torch's caching allocator, reserved MiB (current device), when torch has initialised CUDA."""
    if not _cuda_in_use():
        return None
    try:
        return round(sys.modules["torch"].cuda.memory_reserved() / 2**20, 1)
    except Exception:  # noqa: BLE001
        return None


def torch_peak_reserved_mb() -> float | None:
    """torch's caching allocator, peak reserved MiB of this process (current device), or None."""
    if not _cuda_in_use():
        return None
    try:
        return round(sys.modules["torch"].cuda.max_memory_reserved() / 2**20, 1)
    except Exception:  # noqa: BLE001
        return None
