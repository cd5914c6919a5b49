"""The scenarios by name, their sizes, and one run of several: what ``corral bench`` and the
scripts in ``bench/`` call."""

from __future__ import annotations

import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from corral.bench._stats import machine, now_iso


@dataclass
class Sizes:
    """How much each scenario does; the defaults are the documented runs."""

    jobs: int = 1000  # dispatch: `true` jobs
    workers: int = 2  # dispatch, roundtrip, calls: local workers
    slots: int = 4  # and --max-concurrent-tasks of each
    roundtrips: int = 100  # roundtrip, calls: one at a time
    spawns: int = 2000  # floors: `true` spawned
    requests: int = 4000  # floors: POSTs
    calls: int = 2000  # calls: no-op calls in one map
    kills: int = 3  # kill: workers SIGKILLed, one job each
    fleet_size: int = 10_000  # fleet: simulated workers
    fleet_steady_s: float = 60.0  # fleet: the window measured
    fleet_roundtrips: int = 100  # fleet: jobs to the real worker
    fleet_procs: int | None = None  # fleet: generator processes (None: by size)
    peer_tasks: int = 2000  # --compare: no-op tasks
    peer_process_tasks: int = 500  # --compare: tasks that each run `true`


Scenario = Callable[[Sizes, str | None], Awaitable[dict[str, Any]]]


def _all_succeeded(result: dict[str, Any]) -> dict[str, Any]:
    """A job that did not succeed makes the figures meaningless: the scenario failed."""
    if set(result["states"]) != {"succeeded"}:
        result["error"] = f"not every job succeeded: {result['states']}"
    return result


async def _floors(s: Sizes, db: str | None) -> dict[str, Any]:
    from corral.bench.floors import http_floor, spawn_floor

    return {"spawn": await spawn_floor(s.spawns), "http": await http_floor(s.requests)}


async def _dispatch(s: Sizes, db: str | None) -> dict[str, Any]:
    from corral.bench.dispatch import dispatch

    return _all_succeeded(await dispatch(s.jobs, s.workers, s.slots, ["true"], db=db))


async def _roundtrip(s: Sizes, db: str | None) -> dict[str, Any]:
    from corral.bench.dispatch import roundtrip

    return _all_succeeded(await roundtrip(s.roundtrips, s.workers, s.slots, db=db))


async def _calls(s: Sizes, db: str | None) -> dict[str, Any]:
    from corral.bench.calls import calls

    return await calls(s.calls, s.roundtrips, s.workers, s.slots, db=db)


async def _kill(s: Sizes, db: str | None) -> dict[str, Any]:
    from corral.bench.kill import kill

    return await kill(s.kills, db=db)


async def _fleet(s: Sizes, db: str | None) -> dict[str, Any]:
    from corral.bench.fleet import fleet

    return await fleet(s.fleet_size, s.fleet_roundtrips, s.fleet_steady_s, s.fleet_procs, db=db)


# In the order they run: the floors first, the fleet (the longest) last.
SCENARIOS: dict[str, Scenario] = {
    "floors": _floors,
    "dispatch": _dispatch,
    "roundtrip": _roundtrip,
    "calls": _calls,
    "kill": _kill,
    "fleet": _fleet,
}


async def run_suite(
    names: list[str],
    sizes: Sizes,
    db: str | None = None,
    compare: list[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Each named scenario, then each peer; a scenario that fails is recorded with its
    error (``{"error": …}``) and the others still run."""
    from corral.bench.peers import peer

    out: dict[str, Any] = {"when": now_iso(), "machine": machine(), "sizes": asdict(sizes),
                           "db": "postgresql" if db and db != "sqlite" else "sqlite",
                           "scenarios": {}, "peers": {}}  # fmt: skip
    for name in [n for n in SCENARIOS if n in names]:
        progress(name)
        t0 = time.perf_counter()
        try:
            result = await SCENARIOS[name](sizes, db)
        except Exception as exc:
            result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        result["scenario_s"] = round(time.perf_counter() - t0, 1)
        out["scenarios"][name] = result
    for name in compare or []:
        progress(name)
        out["peers"][name] = await peer(
            name, sizes.peer_tasks, sizes.roundtrips, sizes.peer_process_tasks
        )
    return out
