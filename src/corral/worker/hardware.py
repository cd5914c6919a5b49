"""What this machine has: CPUs, memory and accelerators (NVIDIA through NVML, AMD through
amdsmi or rocm-smi, Apple's MPS through torch), and which of its GPUs this worker owns."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil  # type: ignore[import-untyped]
import structlog

from corral.protocol import GpuInfo
from corral.worker._gpus import _amd, _mps, _nvidia, gpu_usage

__all__ = [
    "GpuPool",
    "Hardware",
    "detect",
    "gpu_usage",
    "summary",
    "usage",
]

log = structlog.get_logger("corral.worker.hardware")


@dataclass(frozen=True)
class Hardware:
    # gpus stays fourth: callers build Hardware(host, cpus, memory, gpus) positionally.
    hostname: str
    cpu_count: int
    memory_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)
    cpu_model: str = ""
    accelerator: str = "cpu"  # cpu, cuda, rocm or mps (corral.protocol.Accelerator)
    note: str = ""  # why no accelerator was found, in words


def detect(gpu_ids: list[str] | None = None, environ: Mapping[str, str] | None = None) -> Hardware:
    """This machine, with only the GPUs this worker owns: ``gpu_ids`` (indices or uuids) when
    given, else the ``*_VISIBLE_DEVICES`` of ``environ`` (default ``os.environ``)."""
    memory = int(psutil.virtual_memory().total)
    accelerator, gpus, note = _find(gpu_ids, os.environ if environ is None else environ, memory)
    return Hardware(
        hostname=platform.node(),
        cpu_count=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        memory_bytes=memory,
        gpus=gpus,
        cpu_model=_cpu_model(),
        accelerator=accelerator,
        note=note,
    )


def summary(hw: Hardware) -> dict[str, Any]:
    """The fields of the line the worker logs when it starts."""
    drivers = sorted({g.driver for g in hw.gpus if g.driver})
    return {
        "hostname": hw.hostname,
        "cpu_model": hw.cpu_model,
        "cpu_count": hw.cpu_count,
        "memory_gib": round(hw.memory_bytes / 2**30, 1),
        "accelerator": hw.accelerator,
        "gpu_count": len(hw.gpus),
        "gpus": [_describe(g) for g in hw.gpus],
        "driver": ", ".join(drivers),
        "note": hw.note,
    }


def _describe(gpu: GpuInfo) -> str:
    text = f"{gpu.index}: {gpu.name}, {gpu.memory_bytes / 2**30:.0f} GiB"
    return f"{text}, {gpu.uuid}" if gpu.uuid else text


def _find(
    gpu_ids: list[str] | None, env: Mapping[str, str], memory_bytes: int
) -> tuple[str, list[GpuInfo], str]:
    """(accelerator, owned GPUs, note); the first vendor that shows a GPU wins."""
    notes: list[str] = []
    for accelerator, finder, variables in (
        ("cuda", _nvidia, ("CUDA_VISIBLE_DEVICES",)),
        ("rocm", _amd, ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES")),
        ("mps", lambda: _mps(memory_bytes), ()),
    ):
        found, why = finder()
        if why:
            notes.append(why)
        if not found:
            continue
        wanted: list[str] | None
        if gpu_ids is not None:
            source, wanted = "--gpu-ids", [s.strip() for s in gpu_ids if s.strip()]
        else:
            source = next((v for v in variables if v in env), "")
            wanted = _split(env[source]) if source else None
        owned = _owned(found, wanted, source)
        if not owned:
            notes.append(f"{len(found)} {accelerator} GPUs, none of them this worker's ({source})")
            return "cpu", [], "; ".join(notes)
        return accelerator, owned, ""
    return "cpu", [], "; ".join(notes)


def _split(spec: str) -> list[str]:
    return [s.strip() for s in spec.split(",") if s.strip()]


def _owned(gpus: list[GpuInfo], wanted: list[str] | None, source: str) -> list[GpuInfo]:
    """Those of ``gpus`` that ``wanted`` names by index or uuid, in the driver's order."""
    if wanted is None:
        return gpus
    chosen: set[int] = set()
    for entry in wanted:
        match = [g.index for g in gpus if entry in (str(g.index), g.uuid)]
        if not match:
            log.warning("gpu_id.unknown", gpu_id=entry, source=source, known=len(gpus))
        chosen.update(match)
    return [g for g in gpus if g.index in chosen]


def _cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    if sys.platform.startswith("linux"):
        try:
            with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    key, _, value = line.partition(":")
                    if key.strip().lower() == "model name" and value.strip():
                        return value.strip()[:200]
        except OSError:
            pass
    try:
        return platform.processor().strip()[:200]
    except Exception:
        return ""


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

    def take_these(self, indices: list[int]) -> bool:
        """Claim exactly these GPUs if each is this pool's and free; else claim none."""
        wanted = set(indices)
        if len(wanted) != len(indices) or not wanted <= self._free:
            return False
        self._free -= wanted
        return True

    def claim(self, indices: list[int]) -> None:
        """Mark GPUs as held (by an attempt adopted after a restart)."""
        self._free.difference_update(indices)

    def give_back(self, indices: list[int]) -> None:
        self._free.update(i for i in indices if i in self.indices)
