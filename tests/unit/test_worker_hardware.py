"""Hardware detection never crashes, and GPUs are handed out without overlap."""

from __future__ import annotations

import sys
import types

import pytest

from corral.protocol import GpuInfo
from corral.worker import hardware


def test_detect_describes_this_machine() -> None:
    hw = hardware.detect()
    assert hw.cpu_count >= 1 and hw.memory_bytes > 0
    assert isinstance(hw.gpus, list)  # [] on a machine without an NVIDIA driver
    cpu, used = hardware.usage()
    assert cpu >= 0 and used > 0


def test_no_nvml_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = types.ModuleType("pynvml")

    def init() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    broken.nvmlInit = init  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", broken)
    assert hardware.detect_gpus() == []
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed at all
    assert hardware.detect_gpus() == []


def test_worker_cuda_visible_devices_limits_what_it_offers() -> None:
    gpus = [GpuInfo(index=i, name="g", memory_bytes=1, uuid=f"GPU-{i}") for i in range(4)]
    assert [g.index for g in hardware._visible(gpus, None)] == [0, 1, 2, 3]
    assert [g.index for g in hardware._visible(gpus, "2,3")] == [2, 3]
    assert [g.index for g in hardware._visible(gpus, "GPU-1")] == [1]
    assert hardware._visible(gpus, "") == []


def test_gpu_pool_hands_out_disjoint_sets() -> None:
    pool = hardware.GpuPool([0, 1, 2])
    a = pool.take(2)
    b = pool.take(1)
    assert a == [0, 1] and b == [2] and pool.take(1) is None
    assert pool.take(0) == []
    pool.give_back(a or [])
    assert pool.free == 2 and pool.take(2) == [0, 1]
    pool.claim([2])  # an attempt adopted after a restart still holds GPU 2
    pool.give_back([7])  # not ours: ignored
    assert pool.free == 0


def test_nvml_gpus_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("pynvml")
    calls: list[str] = []
    fake.nvmlInit = lambda: calls.append("init")  # type: ignore[attr-defined]
    fake.nvmlShutdown = lambda: calls.append("shutdown")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    fake.nvmlDeviceGetName = lambda h: b"NVIDIA H100" if h == 0 else "NVIDIA H100"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetUUID = lambda h: f"GPU-{h}"  # type: ignore[attr-defined]
    fake.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=80 << 30)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    [gpu] = hardware.detect_gpus()
    assert (gpu.index, gpu.name, gpu.uuid) == (1, "NVIDIA H100", "GPU-1")
    assert gpu.memory_bytes == 80 << 30
    assert calls == ["init", "shutdown"]
