"""Fleet scale: N simulated workers (``_simworkers``, in a few generator processes so the
generator is not what limits) connected to one coordinator beside one real worker. Measures
the coordinator's CPU (cores on average over a steady window) and resident memory with the
fleet connected, and the round trip of jobs pinned by label to the real worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from typing import Any

from corral.bench._stats import (
    Stopwatch,
    database,
    machine,
    now_iso,
    p50_p99,
    raise_fd_limit,
    rss_mib,
)
from corral.bench.dispatch import local_fleet, ms_between, one_at_a_time
from corral.client import AsyncClient

REAL = {"bench": "real"}  # the real worker's label; the simulated ones have none
COUNTERS = ("created", "registered", "streaming", "heartbeats", "declined", "drops", "errors")


class Generator:
    """One generator process and its last reported counters."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.counters: dict[str, Any] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.counters = json.loads(line)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


def _sum(gens: list[Generator]) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(int(g.counters.get(k, 0)) for g in gens) for k in COUNTERS}
    errors = [g.counters["last_error"] for g in gens if g.counters.get("last_error")]
    out["last_error"] = errors[0] if errors else ""
    return out


async def _start_generators(url: str, key: str, size: int, procs: int,
                            per_pool: int) -> list[Generator]:  # fmt: skip
    gens = []
    share = math.ceil(size / procs)
    for p in range(procs):
        count = min(share, size - p * share)
        if count <= 0:
            break
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "corral.bench._simworkers",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None
        cfg = {"url": url, "admin_key": key, "count": count, "per_pool": per_pool,
               "prefix": f"sim{p}-"}  # fmt: skip
        proc.stdin.write(json.dumps(cfg).encode())
        proc.stdin.close()
        gens.append(Generator(proc))
    return gens


async def fleet(
    size: int,
    roundtrips: int = 100,
    steady_s: float = 60.0,
    procs: int | None = None,
    per_pool: int = 50,
    ramp_timeout_s: float | None = None,
    db: str | None = None,
) -> dict[str, Any]:
    """``size`` simulated workers plus one real one; ``steady_s`` of the connected fleet
    measured, then ``roundtrips`` jobs run one at a time on the real worker."""
    fd_limit = raise_fd_limit()
    procs = procs or max(1, min(4, math.ceil(size / 2500)))
    ramp_timeout_s = ramp_timeout_s or 60 + size / 20
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp, database(db) as db_url:
        async with local_fleet(tmp, 1, 1, db_url, labels=REAL) as lf:
            await lf.wait_ready()
            assert lf.admin_key is not None
            coordinator = lf.pids()["coordinator"]
            idle_rss = rss_mib(coordinator)
            t0 = time.perf_counter()
            gens = await _start_generators(lf.url, lf.admin_key, size, procs, per_pool)
            try:
                while _sum(gens)["streaming"] < size:
                    if time.perf_counter() - t0 > ramp_timeout_s:
                        break
                    if any(g.proc.returncode is not None for g in gens):
                        raise RuntimeError(f"a generator exited: {_sum(gens)['last_error']}")
                    await asyncio.sleep(0.5)
                ramp_s = time.perf_counter() - t0
                at_ramp = _sum(gens)
                await asyncio.sleep(min(5.0, steady_s / 4))  # the ramp's backlog drains
                pids = {"coordinator": coordinator, "real worker": lf.pids()["local-1"]}
                pids |= {f"generator {i}": g.proc.pid for i, g in enumerate(gens)}
                watch = Stopwatch(pids)
                beats0 = _sum(gens)["heartbeats"]
                await asyncio.sleep(steady_s)
                wall, cpu = watch.stop()
                steady = _sum(gens)
                rss = rss_mib(coordinator)
                # A long timeout: a coordinator this loaded is what is measured, not a
                # reason to retry.
                async with AsyncClient(lf.url, lf.admin_key, timeout=120) as client:
                    listed = sum(1 for w in await client.workers() if w.status in ("idle", "busy"))
                    done, wall_ms = await one_at_a_time(client, ["true"], roundtrips, REAL)
                after = _sum(gens)
            finally:
                for g in gens:
                    await g.stop()
    generators_cores = sum(v for k, v in cpu.items() if k.startswith("generator")) / wall
    return {
        "params": {
            "simulated_workers": size,
            "generator_processes": len(gens),
            "workers_per_pool": per_pool,
            "steady_s": steady_s,
            "roundtrips": roundtrips,
            "db": "postgresql" if db_url else "sqlite",
            "fd_limit": fd_limit,
        },
        "machine": machine(),
        "when": now_iso(),
        "ramp_s": round(ramp_s, 1),
        "connected_at_ramp": at_ramp["streaming"],
        "connected_after_steady": steady["streaming"],
        "connected_after_roundtrips": after["streaming"],
        "online_workers_listed": listed,
        "heartbeats_per_s": round((steady["heartbeats"] - beats0) / wall, 1),
        "coordinator_cores": round(cpu["coordinator"] / wall, 3),
        "coordinator_rss_mib": rss,
        "coordinator_rss_idle_mib": idle_rss,
        "generators_cores": round(generators_cores, 3),
        "real_worker_cores": round(cpu["real worker"] / wall, 3),
        "roundtrip_states": {
            s: sum(1 for j in done if j.state == s) for s in {j.state for j in done}
        },
        "roundtrip_submit_to_end_ms": ms_between(done, "finished_at"),
        "roundtrip_client_ms": p50_p99(wall_ms),
        "simulated": after,
    }
