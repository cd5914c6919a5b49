"""Takes no new work while the machine is busier than its limits (``--max-cpu-percent``,
``--max-memory-percent``, ``--max-gpu-percent``), and cools down before taking more."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil  # type: ignore[import-untyped]

from corral.worker import hardware

__all__ = ["CpuMeter", "Guard", "Limits", "Sample", "sample"]


@dataclass(frozen=True)
class Limits:
    max_cpu_percent: float | None = None
    max_memory_percent: float | None = None
    max_gpu_percent: float | None = None
    cooldown_s: float = 30.0

    def any(self) -> bool:
        return any(
            v is not None
            for v in (self.max_cpu_percent, self.max_memory_percent, self.max_gpu_percent)
        )


@dataclass(frozen=True)
class Sample:
    cpu_percent: float
    memory_percent: float
    gpu_percent: list[float] | None = None  # per GPU the worker owns; None: not known


class Guard:
    """Decides from samples whether the worker may take new work; does no I/O itself."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._cause: str | None = None  # the last limit broken, until the cooldown ends
        self._clear_since: float | None = None  # when every value came back under
        self._which: tuple[str, ...] = ()  # the limits the episode's words are about

    @property
    def constrained(self) -> bool:
        return self._cause is not None

    def check(self, sample: Sample) -> str | None:
        """Why it takes no new work now ("cpu 97% above the limit of 90%"), or None.

        Once over a limit it stays constrained until every value has been under its limit
        for ``cooldown_s``, so a load that flickers around a limit does not flap. The words
        stay those of the episode's start while the same limits are passed, and one line
        names the cooldown: the coordinator records each new wording, not each sample."""
        now = self._clock()
        over, which = self._over(sample)
        if over:
            if which != self._which or self._clear_since is not None:
                self._cause, self._which = over, which
            self._clear_since = None
            return self._cause
        if self._cause is None:
            return None
        if self._clear_since is None:
            self._clear_since = now
        if now - self._clear_since >= self.limits.cooldown_s:
            self._cause = self._clear_since = None
            self._which = ()
            return None
        return f"cooling down for {self.limits.cooldown_s:g}s after {self._cause}"

    def _over(self, sample: Sample) -> tuple[str, tuple[str, ...]]:
        """The words for the limits passed, and which they are."""
        gpu = max(sample.gpu_percent) if sample.gpu_percent else None
        passed = [
            (what, f"{what} {_percent(value)} above the limit of {_percent(limit)}")
            for what, value, limit in (
                ("cpu", sample.cpu_percent, self.limits.max_cpu_percent),
                ("memory", sample.memory_percent, self.limits.max_memory_percent),
                ("gpu", gpu, self.limits.max_gpu_percent),
            )
            if value is not None and limit is not None and value > limit
        ]
        return "; ".join(text for _, text in passed), tuple(what for what, _ in passed)


def _percent(value: float) -> str:
    return f"{round(value, 1):g}%"


class CpuMeter:
    """CPU percent since the previous reading, whichever thread reads it: psutil's own
    ``cpu_percent(interval=None)`` keeps one baseline per thread, and samples are taken on
    a thread pool (and would also shorten the heartbeat's interval)."""

    def __init__(self, times: Callable[[], Any] = psutil.cpu_times) -> None:
        self._times = times
        self._lock = threading.Lock()
        self._last = times()

    def percent(self) -> float:
        with self._lock:  # readings in order, so no delta is negative
            now = self._times()
            before, self._last = self._last, now
        total = _total(now) - _total(before)
        busy = total - (_idle(now) - _idle(before))
        return min(max(100.0 * busy / total, 0.0), 100.0) if total > 0 else 0.0


def _total(times: Any) -> float:
    # Linux counts guest time inside user time too.
    return float(sum(times)) - getattr(times, "guest", 0) - getattr(times, "guest_nice", 0)


def _idle(times: Any) -> float:
    return float(times.idle) + getattr(times, "iowait", 0)


_cpu = CpuMeter()


def sample(gpu_indices: list[int], cpu: CpuMeter = _cpu) -> Sample:
    """The machine now: CPU since the previous sample, memory, and these GPUs."""
    return Sample(
        cpu_percent=cpu.percent(),
        memory_percent=float(psutil.virtual_memory().percent),
        gpu_percent=hardware.gpu_usage(gpu_indices) if gpu_indices else None,
    )
