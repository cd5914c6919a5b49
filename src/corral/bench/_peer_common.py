"""What both peer drivers share: the workloads' timing, CPU of a process tree, JSON out."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import psutil  # type: ignore[import-untyped]

from corral.bench._stats import p50_p99


def tree_cpu_s() -> float:
    """CPU seconds of this process and every descendant still alive (the peer's daemons
    and workers are children of its driver)."""
    total = 0.0
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def timed(
    run_many: Callable[[int], object],
    run_one: Callable[[], object],
    run_many_true: Callable[[int], object],
    cfg: dict[str, Any],
) -> dict[str, Any]:
    """The three workloads: N no-op tasks end to end, one at a time, ``true`` in each."""
    run_many(min(100, cfg["tasks"]))  # warm: workers started, code imported
    cpu0, t0 = tree_cpu_s(), time.perf_counter()
    run_many(cfg["tasks"])
    wall, cpu = time.perf_counter() - t0, tree_cpu_s() - cpu0
    lat = []
    for _ in range(cfg["roundtrips"]):
        t = time.perf_counter()
        run_one()
        lat.append((time.perf_counter() - t) * 1000)
    t1 = time.perf_counter()
    run_many_true(cfg["process_tasks"])
    wall_true = time.perf_counter() - t1
    return {
        "tasks": cfg["tasks"],
        "noop_tasks_per_s": round(cfg["tasks"] / wall, 1),
        "noop_cpu_ms_per_task": round(cpu * 1000 / cfg["tasks"], 3),
        "roundtrip_ms": p50_p99(lat),
        "process_tasks": cfg["process_tasks"],
        "process_tasks_per_s": round(cfg["process_tasks"] / wall_true, 1),
    }


def read_cfg() -> dict[str, Any]:
    return dict(json.loads(sys.stdin.read()))


def write(result: dict[str, Any]) -> None:
    print("RESULT " + json.dumps(result), flush=True)
