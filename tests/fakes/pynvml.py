"""A stand-in for nvidia-ml-py's ``pynvml``, because no machine here has an NVIDIA GPU.

Put this folder first on ``PYTHONPATH`` (a child worker too) or in ``sys.modules["pynvml"]``.
``CORRAL_FAKE_NVML`` is a JSON list, one object per GPU:
``[{"name": "NVIDIA H100", "memory_gb": 80, "uuid": "GPU-0", "util": 35}]``, memory in GiB;
``uuid`` is optional (default ``GPU-fake-<index>``), and a GPU without ``util`` answers
"Not Supported" for it. Unset, ``nvmlInit`` fails as it does on a machine without a driver.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

FAKE_DRIVER_VERSION = "550.54.15"

_gpus: list[dict[str, Any]] | None = None
_inits = 0


class NVMLError(Exception):
    pass


class NVMLError_LibraryNotFound(NVMLError):  # pynvml spells it so
    pass


def nvmlInit() -> None:
    global _gpus, _inits
    spec = os.environ.get("CORRAL_FAKE_NVML")
    if spec is None:
        raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
    _gpus = list(json.loads(spec))
    _inits += 1


def nvmlShutdown() -> None:
    global _inits
    _ready()
    _inits -= 1


def nvmlSystemGetDriverVersion() -> str:
    _ready()
    return FAKE_DRIVER_VERSION


def nvmlDeviceGetCount() -> int:
    return len(_ready())


def nvmlDeviceGetHandleByIndex(index: int) -> int:
    if not 0 <= index < len(_ready()):
        raise NVMLError("Invalid Argument")
    return index


def nvmlDeviceGetName(handle: int) -> str:
    return str(_gpu(handle)["name"])


def nvmlDeviceGetUUID(handle: int) -> str:
    return str(_gpu(handle).get("uuid", f"GPU-fake-{handle}"))


def nvmlDeviceGetMemoryInfo(handle: int) -> SimpleNamespace:
    total = int(float(_gpu(handle)["memory_gb"]) * 2**30)
    return SimpleNamespace(total=total, used=0, free=total)


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:
    gpu = _gpu(handle)
    if "util" not in gpu:
        raise NVMLError("Not Supported")
    return SimpleNamespace(gpu=int(gpu["util"]), memory=0)


def _ready() -> list[dict[str, Any]]:
    if _gpus is None or _inits <= 0:
        raise NVMLError("Uninitialized")
    return _gpus


def _gpu(handle: int) -> dict[str, Any]:
    gpus = _ready()
    if not isinstance(handle, int) or not 0 <= handle < len(gpus):
        raise NVMLError("Invalid Argument")
    return gpus[handle]
