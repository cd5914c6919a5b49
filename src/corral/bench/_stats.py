"""Percentiles, CPU and memory of processes, the machine: what every scenario reports."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import secrets
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import psutil  # type: ignore[import-untyped]


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile; ``q`` in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def p50_p99(values_ms: list[float]) -> dict[str, float]:
    """``{"p50": …, "p99": …}`` in ms, rounded; ``{}`` when there is nothing to rank."""
    if not values_ms:
        return {}
    return {
        "p50": round(percentile(values_ms, 50), 2),
        "p99": round(percentile(values_ms, 99), 2),
    }


def cpu_s(pid: int) -> float:
    """CPU seconds of a process so far, its reaped children (a worker's jobs) included."""
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def self_cpu_s() -> float:
    """CPU seconds of this process and its reaped children."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return float(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)


def rss_mib(pid: int) -> float:
    return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def raise_fd_limit() -> int:
    """The soft limit of open files raised to the hard one (children inherit it): a
    connection is a file on both ends, and a coordinator with many workers holds one each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@contextlib.contextmanager
def database(db: str | None) -> Iterator[str | None]:
    """None (SQLite in the fleet's data directory), or a fresh PostgreSQL database on the
    server ``db`` names, dropped afterwards: each scenario starts from an empty queue."""
    if not db or db == "sqlite":
        yield None
        return
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(db)
    admin = url.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"corral_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Stopwatch:
    """Wall and CPU time of a set of processes over a phase."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.perf_counter()
        self.cpu0 = self._cpu()

    def _cpu(self) -> dict[str, float]:
        out = {role: cpu_s(pid) for role, pid in self.pids.items()}
        out["bench client"] = time.process_time()
        return out

    def stop(self) -> tuple[float, dict[str, float]]:
        """Seconds elapsed and CPU seconds per role since the start."""
        cpu1 = self._cpu()
        return time.perf_counter() - self.t0, {r: cpu1[r] - self.cpu0[r] for r in cpu1}
