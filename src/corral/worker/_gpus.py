"""Asking each vendor's driver which GPUs this machine has: NVIDIA through NVML (the
nvidia-ml-py package), AMD through amdsmi or the rocm-smi program, Apple's MPS through torch.
Each answers ``(gpus, why none)`` and never raises: a machine without them is the usual case."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import structlog

from corral.protocol import GpuInfo

__all__ = ["ROCM_SMI_TIMEOUT_S", "GpuReading", "gpu_readings", "gpu_usage"]

log = structlog.get_logger("corral.worker.hardware")

ROCM_SMI_TIMEOUT_S = 10.0
_ROCM_SMI_ARGS = (
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showuniqueid",
    "--showdriverversion",
    "--json",
)


def _nvidia() -> tuple[list[GpuInfo], str]:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return [], "NVML: nvidia-ml-py not installed"
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no device, a container without /dev/nvidia*
        return [], f"NVML: no driver ({_reason(exc)})"
    gpus: list[GpuInfo] = []
    try:
        driver = _text(_ask(pynvml, "nvmlSystemGetDriverVersion"))
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = _text(pynvml.nvmlDeviceGetName(handle)) or f"NVIDIA GPU {index}"
                total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
            except Exception as exc:
                log.warning("nvml.gpu_unreadable", index=index, error=_reason(exc))
                continue
            rates = _ask(pynvml, "nvmlDeviceGetUtilizationRates", handle)
            uuid = _text(_ask(pynvml, "nvmlDeviceGetUUID", handle))
            gpus.append(_gpu(index, name, total, uuid, driver, getattr(rates, "gpu", None)))
    except Exception as exc:
        log.warning("nvml.query_failed", error=_reason(exc))
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus, "" if gpus else "NVML: no GPUs"


def gpu_usage(indices: list[int]) -> list[float] | None:
    """Utilisation percent of these NVIDIA GPUs now, or None when NVML does not answer for
    each of them."""
    readings = gpu_readings(indices)
    if readings is None or len(readings) != len(indices):
        return None
    usage = [r.utilization_percent for r in readings]
    return None if None in usage else [u for u in usage if u is not None]


@dataclass(frozen=True)
class GpuReading:
    """One NVIDIA GPU now; None where the driver does not report that figure."""

    index: int
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None


def gpu_readings(indices: list[int]) -> list[GpuReading] | None:
    """Utilisation and memory of these NVIDIA GPUs now (the worker's /metrics), or None
    when NVML does not answer. Blocking: call it off the event loop."""
    if not indices:
        return []
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        found = []
        for index in indices:
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:
                log.debug("nvml.gpu_unreadable", index=index, error=_reason(exc))
                continue
            rates = _ask(pynvml, "nvmlDeviceGetUtilizationRates", handle)
            memory = _ask(pynvml, "nvmlDeviceGetMemoryInfo", handle)
            util = _float(getattr(rates, "gpu", None))
            used, total = (getattr(memory, k, None) for k in ("used", "total"))
            found.append(GpuReading(index, util, _bytes(used), _bytes(total)))
        return found
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _bytes(value: object) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _amd() -> tuple[list[GpuInfo], str]:
    notes: list[str] = []
    try:
        amdsmi = importlib.import_module("amdsmi")
    except Exception:  # absent, or present without its shared library
        amdsmi = None
    if amdsmi is not None:
        gpus, why = _amdsmi(amdsmi)
        if gpus:
            return gpus, ""
        notes.append(why)
    gpus, why = _rocm_smi()
    return gpus, "; ".join([*notes, why]) if not gpus else ""


def _amdsmi(amdsmi: Any) -> tuple[list[GpuInfo], str]:
    """Through AMD's Python bindings; not exercised here (no machine here has them)."""
    try:
        amdsmi.amdsmi_init()
    except Exception as exc:
        return [], f"amdsmi: no driver ({_reason(exc)})"
    gpus: list[GpuInfo] = []
    try:
        for index, handle in enumerate(amdsmi.amdsmi_get_processor_handles()):
            asic = _ask(amdsmi, "amdsmi_get_gpu_asic_info", handle) or {}
            vram = _ask(amdsmi, "amdsmi_get_gpu_vram_info", handle) or {}
            activity = _ask(amdsmi, "amdsmi_get_gpu_activity", handle) or {}
            driver = _ask(amdsmi, "amdsmi_get_gpu_driver_info", handle) or {}
            gpus.append(
                _gpu(
                    index,
                    _value(asic.get("market_name")) or f"AMD GPU {index}",
                    _int(vram.get("vram_size")) << 20,  # MiB
                    _value(_ask(amdsmi, "amdsmi_get_gpu_device_uuid", handle)),
                    _value(driver.get("driver_version")),
                    activity.get("gfx_activity"),
                )
            )
    except Exception as exc:
        log.warning("amdsmi.query_failed", error=_reason(exc))
    finally:
        try:
            amdsmi.amdsmi_shut_down()
        except Exception:
            pass
    return gpus, "" if gpus else "amdsmi: no GPUs"


def _rocm_smi() -> tuple[list[GpuInfo], str]:
    program = shutil.which("rocm-smi")
    if program is None:
        return [], "rocm-smi: not installed"
    try:
        done = subprocess.run(
            [program, *_ROCM_SMI_ARGS],
            capture_output=True,
            text=True,
            timeout=ROCM_SMI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return [], f"rocm-smi: no answer within {ROCM_SMI_TIMEOUT_S:g} s"
    except OSError as exc:
        return [], f"rocm-smi: {_reason(exc)}"
    # It may exit non-zero when one query is unsupported yet still print the rest.
    start = done.stdout.find("{")
    try:
        data = json.loads(done.stdout[start:]) if start >= 0 else None
    except ValueError:
        data = None
    if data is None:
        why = f"exit status {done.returncode}, no JSON"
        err = (done.stderr.strip().splitlines() or [""])[-1][:200]
        return [], f"rocm-smi: {why} ({err})" if err else f"rocm-smi: {why}"
    gpus = _parse_rocm_smi(data)
    return gpus, "" if gpus else "rocm-smi: no GPUs"


def _parse_rocm_smi(data: object) -> list[GpuInfo]:
    """GPUs from ``rocm-smi --json``: {"card0": {...}, "system": {"Driver version": ...}}."""
    if not isinstance(data, dict):
        return []
    system = _lower(data.get("system"))
    gpus: list[GpuInfo] = []
    for key, raw in data.items():
        found = re.fullmatch(r"card(\d+)", str(key).strip().lower())
        card = _lower(raw)
        if found is None or not card:
            continue
        index = int(found.group(1))
        name = next(
            (
                _value(card.get(k))
                for k in ("card series", "device name", "card model", "card sku")
                if _value(card.get(k))
            ),
            None,
        )
        gpus.append(
            _gpu(
                index,
                name or f"AMD GPU {index}",
                _int(card.get("vram total memory (b)")),
                _value(card.get("unique id")),
                _value(card.get("driver version")) or _value(system.get("driver version")),
                card.get("gpu use (%)"),
            )
        )
    return sorted(gpus, key=lambda g: g.index)


def _mps(memory_bytes: int) -> tuple[list[GpuInfo], str]:
    if sys.platform != "darwin":
        return [], ""
    try:
        torch = importlib.import_module("torch")  # only here: importing it takes seconds
    except Exception:
        return [], "MPS: torch not installed"
    try:
        available = bool(torch.backends.mps.is_available())
    except Exception as exc:
        return [], f"MPS: {_reason(exc)}"
    if not available:
        return [], "MPS: not available"
    return [GpuInfo(index=0, name="Apple MPS", memory_bytes=memory_bytes)], ""


def _gpu(
    index: int,
    name: str,
    memory_bytes: int,
    uuid: str | None,
    driver: str | None,
    utilization: object,
) -> GpuInfo:
    """A GpuInfo that passes its own validation, whatever the tool reported."""
    util = _float(utilization)
    return GpuInfo(
        index=index,
        name=name[:200],
        memory_bytes=min(max(memory_bytes, 0), 2**62),
        uuid=uuid[:100] if uuid else None,
        driver=driver[:100] if driver else None,
        utilization_percent=util if util is not None and 0 <= util <= 100 else None,
    )


def _ask(module: Any, function: str, *args: Any) -> Any:
    """``module.function(*args)``, or None when it raises or is missing (an optional field
    that this device or this version of the bindings does not report)."""
    try:
        return getattr(module, function)(*args)
    except Exception:
        return None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _value(value: object) -> str | None:
    """A reported string, or None for an absent or "N/A" one."""
    text = _text(value) if not isinstance(value, int) else str(value)
    text = text.strip() if text else ""
    return text if text and text.upper() not in ("N/A", "NA", "UNKNOWN") else None


def _int(value: object) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return 0


def _float(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(str(value).strip().rstrip("%"))
    except ValueError:
        return None


def _lower(value: object) -> dict[str, Any]:
    """A dict with its keys lower-cased: rocm-smi's capitalisation differs between versions."""
    if not isinstance(value, dict):
        return {}
    return {str(k).strip().lower(): v for k, v in value.items()}
