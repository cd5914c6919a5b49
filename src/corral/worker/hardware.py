"""What this machine has: CPUs, memory and NVIDIA GPUs (through NVML, when a driver answers)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

import psutil  # type: ignore[import-untyped]
import structlog

from corral.protocol import GpuInfo

__all__ = ["GpuPool", "Hardware", "detect", "detect_gpus", "usage"]

log = structlog.get_logger("corral.worker.hardware")


@dataclass(frozen=True)
class Hardware:
    hostname: str
    cpu_count: int
    memory_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)


def detect() -> Hardware:
    return Hardware(
        hostname=platform.node(),
        cpu_count=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        memory_bytes=int(psutil.virtual_memory().total),
        gpus=detect_gpus(),
    )


def detect_gpus() -> list[GpuInfo]:
    """GPUs as NVML numbers them, or [] when NVML or its driver is missing.

    A ``CUDA_VISIBLE_DEVICES`` given to the worker itself limits which GPUs it offers, so an
    operator can split one machine between several workers.
    """
    try:
        import pynvml  # nvidia-ml-py, optional
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no device, container without /dev/nvidia*
        log.debug("nvml.unavailable", error=str(exc))
        return []
    gpus: list[GpuInfo] = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                )
            )
    except Exception as exc:
        log.warning("nvml.query_failed", error=str(exc))
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return _visible(gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))


def _visible(gpus: list[GpuInfo], spec: str | None) -> list[GpuInfo]:
    if spec is None:
        return gpus
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    return [g for g in gpus if str(g.index) in wanted or (g.uuid and g.uuid in wanted)]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def usage() -> tuple[float, int]:
    """(cpu percent since the last call, memory used in bytes) for heartbeats."""
    return float(psutil.cpu_percent(interval=None)), int(psutil.virtual_memory().used)


class GpuPool:
    """Hands out disjoint sets of GPU indices to attempts running at once."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = sorted(indices)
        self._free = set(self.indices)

    @property
    def total(self) -> int:
        return len(self.indices)

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self, count: int) -> list[int] | None:
        """``count`` free GPUs, lowest first, or None if there are not that many."""
        if count > len(self._free):
            return None
        chosen = sorted(self._free)[:count]
        self._free.difference_update(chosen)
        return chosen

    def claim(self, indices: list[int]) -> None:
        """Mark GPUs as held (by an attempt adopted after a restart)."""
        self._free.difference_update(indices)

    def give_back(self, indices: list[int]) -> None:
        self._free.update(i for i in indices if i in self.indices)
