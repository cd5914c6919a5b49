"""Hardware detection against fake NVML and rocm-smi (no machine here has a GPU); it never
crashes, and GPUs are handed out without overlap."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import structlog

from corral.protocol import GpuInfo
from corral.worker import _gpus, hardware

ROOT = Path(__file__).resolve().parents[2]
FAKES = ROOT / "tests" / "fakes"
SYSTEM_PATH = os.environ["PATH"]  # where the fake rocm-smi finds python3
TWO_GPUS = [
    {"name": "NVIDIA H100 80GB HBM3", "memory_gb": 80, "uuid": "GPU-uuid-0", "util": 35},
    {"name": "NVIDIA A10", "memory_gb": 24, "uuid": "GPU-uuid-1"},  # no utilisation reading
]
TWO_AMD = [
    {"name": "AMD Instinct MI300X", "memory_gb": 192, "uuid": "0xaa01", "util": 7},
    {"name": "AMD Instinct MI210", "memory_gb": 64},
]


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fake NVML in place of the real one, no amdsmi, and no rocm-smi on PATH."""
    spec = importlib.util.spec_from_file_location("pynvml", FAKES / "pynvml.py")
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import fails
    monkeypatch.setenv("PATH", str(tmp_path))
    for name in ("CORRAL_FAKE_NVML", "CORRAL_FAKE_ROCM"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def nvidia(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_FAKE_NVML", json.dumps(TWO_GPUS))


@pytest.fixture
def amd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{FAKES}{os.pathsep}{SYSTEM_PATH}")
    monkeypatch.setenv("CORRAL_FAKE_ROCM", json.dumps(TWO_AMD))


@pytest.mark.usefixtures("nvidia")
def test_nvidia_gpus_are_described() -> None:
    hw = hardware.detect(environ={})
    assert (hw.accelerator, hw.note) == ("cuda", "")
    first, second = hw.gpus
    assert (first.index, first.name, first.memory_bytes) == (0, "NVIDIA H100 80GB HBM3", 80 << 30)
    assert (first.uuid, first.driver, first.utilization_percent) == ("GPU-uuid-0", "550.54.15", 35)
    assert (second.index, second.name, second.memory_bytes) == (1, "NVIDIA A10", 24 << 30)
    assert second.utilization_percent is None  # a field that raises is left out
    assert hw.cpu_count >= 1 and hw.memory_bytes > 0 and hw.hostname


@pytest.mark.usefixtures("nvidia")
@pytest.mark.parametrize(
    ("gpu_ids", "environ", "indices"),
    [
        (None, {"CUDA_VISIBLE_DEVICES": "1"}, [1]),
        (None, {"CUDA_VISIBLE_DEVICES": " GPU-uuid-1 , 0"}, [0, 1]),  # driver order kept
        (["GPU-uuid-0"], {"CUDA_VISIBLE_DEVICES": "1"}, [0]),  # --gpu-ids wins
        (["1"], {}, [1]),
        (None, {"HIP_VISIBLE_DEVICES": "1"}, [0, 1]),  # AMD's variable: not for NVIDIA
    ],
)
def test_which_nvidia_gpus_are_owned(
    gpu_ids: list[str] | None, environ: dict[str, str], indices: list[int]
) -> None:
    hw = hardware.detect(gpu_ids, environ)
    assert [g.index for g in hw.gpus] == indices and hw.accelerator == "cuda"


@pytest.mark.usefixtures("nvidia")
@pytest.mark.parametrize(
    ("gpu_ids", "environ"), [(None, {"CUDA_VISIBLE_DEVICES": ""}), ([], {}), ([""], {})]
)
def test_an_empty_list_owns_no_gpu(gpu_ids: list[str] | None, environ: dict[str, str]) -> None:
    hw = hardware.detect(gpu_ids, environ)
    assert (hw.gpus, hw.accelerator) == ([], "cpu")
    assert "2 cuda GPUs, none of them this worker's" in hw.note


@pytest.mark.usefixtures("nvidia")
def test_an_unknown_id_is_named_and_ignored() -> None:
    with structlog.testing.capture_logs() as logs:
        hw = hardware.detect(["7", "GPU-uuid-1"], {})
    assert [g.index for g in hw.gpus] == [1]
    [warning] = [e for e in logs if e["event"] == "gpu_id.unknown"]
    assert (warning["gpu_id"], warning["source"], warning["log_level"]) == (
        "7",
        "--gpu-ids",
        "warning",
    )


def test_no_accelerator_says_why() -> None:
    hw = hardware.detect(environ={})
    assert (hw.accelerator, hw.gpus) == ("cpu", [])
    assert hw.note == "NVML: no driver (NVML Shared Library Not Found); rocm-smi: not installed"
    assert hardware.detect().gpus == []


def test_without_nvidia_ml_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert hardware.detect(environ={}).note.startswith("NVML: nvidia-ml-py not installed; ")


@pytest.mark.usefixtures("amd")
def test_amd_gpus_through_rocm_smi() -> None:
    hw = hardware.detect(environ={})
    assert (hw.accelerator, hw.note) == ("rocm", "")
    first, second = hw.gpus
    assert (first.index, first.name, first.memory_bytes) == (0, "AMD Instinct MI300X", 192 << 30)
    assert (first.uuid, first.driver, first.utilization_percent) == ("0xaa01", "6.7.0", 7)
    assert (second.index, second.uuid, second.utilization_percent) == (1, None, None)


@pytest.mark.usefixtures("amd", "nvidia")
def test_nvidia_comes_first() -> None:
    assert hardware.detect(environ={}).accelerator == "cuda"


@pytest.mark.usefixtures("amd")
@pytest.mark.parametrize(
    ("gpu_ids", "environ", "indices"),
    [
        (None, {"HIP_VISIBLE_DEVICES": "1"}, [1]),
        (None, {"ROCR_VISIBLE_DEVICES": "0xaa01"}, [0]),
        (None, {"HIP_VISIBLE_DEVICES": "0", "ROCR_VISIBLE_DEVICES": "1"}, [0]),
        (None, {"CUDA_VISIBLE_DEVICES": "0"}, [0, 1]),
        (["1"], {"HIP_VISIBLE_DEVICES": "0"}, [1]),
    ],
)
def test_which_amd_gpus_are_owned(
    gpu_ids: list[str] | None, environ: dict[str, str], indices: list[int]
) -> None:
    assert [g.index for g in hardware.detect(gpu_ids, environ).gpus] == indices


@pytest.mark.usefixtures("amd")
def test_a_failing_rocm_smi_means_no_amd_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_FAKE_ROCM")
    hw = hardware.detect(environ={})
    assert (hw.accelerator, hw.gpus) == ("cpu", [])
    assert hw.note.endswith(
        "; rocm-smi: exit status 1, no JSON"
        " (ERROR:root:Driver not initialized (amdgpu not found in modules))"
    )


def test_rocm_smi_output_is_read_tolerantly() -> None:
    data = {
        "card1": {"Card series": "Radeon Pro W7900", "VRAM Total Memory (B)": "48"},
        "card0": {"Card model": "0x7448", "Unique ID": "N/A", "GPU use (%)": "N/A"},
        "card2": "not a card",
        "card3": {},
        "system": {"Driver version": "6.2.4"},
        "junk": {"Card series": "ignored"},
    }
    first, second = _gpus._parse_rocm_smi(data)
    assert (first.index, first.name, first.memory_bytes, first.uuid) == (0, "0x7448", 0, None)
    assert (second.index, second.name, second.memory_bytes) == (1, "Radeon Pro W7900", 48)
    assert first.utilization_percent is None and second.driver == "6.2.4"
    assert _gpus._parse_rocm_smi(["card0"]) == []


def test_a_child_process_sees_the_fake_nvml() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(FAKES), str(ROOT / "src")]),
        "CORRAL_FAKE_NVML": json.dumps(TWO_GPUS),
        "CUDA_VISIBLE_DEVICES": "GPU-uuid-1",
    }
    code = "import json; from corral.worker import hardware as h; "
    code += "print(json.dumps(h.summary(h.detect())))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    line = json.loads(done.stdout)
    assert (line["accelerator"], line["gpu_count"], line["driver"]) == ("cuda", 1, "550.54.15")
    assert line["gpus"] == ["1: NVIDIA A10, 24 GiB, GPU-uuid-1"]


def test_summary_is_the_start_line() -> None:
    gpu = hardware.GpuInfo(index=3, name="G", memory_bytes=16 << 30, uuid="u", driver="1")
    hw = hardware.Hardware("h", 8, 32 << 30, [gpu], cpu_model="Xeon", accelerator="cuda")
    assert hardware.summary(hw) == {
        "hostname": "h",
        "cpu_model": "Xeon",
        "cpu_count": 8,
        "memory_gib": 32.0,
        "accelerator": "cuda",
        "gpu_count": 1,
        "gpus": ["3: G, 16 GiB, u"],
        "driver": "1",
        "note": "",
    }


@pytest.mark.usefixtures("nvidia")
def test_gpu_usage_reads_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CORRAL_FAKE_NVML", json.dumps([{**g, "util": 10 + i} for i, g in enumerate(TWO_GPUS)])
    )
    assert hardware.gpu_usage([1, 0]) == [11.0, 10.0]
    assert hardware.gpu_usage([]) == []
    assert hardware.gpu_usage([5]) is None  # no such GPU
    monkeypatch.delenv("CORRAL_FAKE_NVML")
    assert hardware.gpu_usage([0]) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/cpuinfo")
def test_cpu_model(tmp_path: Path) -> None:
    assert hardware.detect(environ={}).cpu_model
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU @ 3.0GHz\n\n")
    assert hardware._cpu_model(str(cpuinfo)) == "Test CPU @ 3.0GHz"
    assert isinstance(hardware._cpu_model(str(tmp_path / "absent")), str)  # never fails


def test_gpu_pool_takes_these_or_none() -> None:
    pool = hardware.GpuPool([0, 1, 2, 3])
    assert pool.take_these([3, 1]) and pool.free == 2
    assert not pool.take_these([1, 2])  # 1 is taken: nothing claimed
    assert not pool.take_these([2, 9])  # 9 is not this pool's
    assert not pool.take_these([2, 2])
    assert pool.free == 2 and pool.take(2) == [0, 2]
    assert pool.take_these([])
    pool.give_back([1, 3])
    assert pool.take_these([1]) and pool.take(1) == [3]


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
    assert hardware.detect().gpus == []
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed at all
    assert hardware.detect().gpus == []


def test_worker_cuda_visible_devices_limits_what_it_offers() -> None:
    gpus = [GpuInfo(index=i, name="g", memory_bytes=1, uuid=f"GPU-{i}") for i in range(4)]

    def visible(spec: str | None) -> list[GpuInfo]:
        return hardware._owned(gpus, None if spec is None else hardware._split(spec), "test")

    assert [g.index for g in visible(None)] == [0, 1, 2, 3]
    assert [g.index for g in visible("2,3")] == [2, 3]
    assert [g.index for g in visible("GPU-1")] == [1]
    assert visible("") == []


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
    [gpu] = hardware.detect().gpus
    assert (gpu.index, gpu.name, gpu.uuid) == (1, "NVIDIA H100", "GPU-1")
    assert gpu.memory_bytes == 80 << 30
    assert calls == ["init", "shutdown"]
