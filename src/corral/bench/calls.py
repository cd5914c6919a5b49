"""Small tasks without a process each: no-op Python calls through ``Client.map`` (the
``call`` task kind, run in warm interpreters kept by the worker). Skipped, with a message,
while the client has no ``map``."""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

from corral.bench._stats import Stopwatch, database, p50_p99
from corral.bench.dispatch import cpu_per_job, local_fleet
from corral.client import Client

TARGET = "corral.bench.calls:noop"


def noop(*args: Any, **kwargs: Any) -> None:
    """What each call runs: nothing, so what is measured is the path to it and back."""
    return None


def available() -> str | None:
    """None when the client can run calls; else why not."""
    if not callable(getattr(Client, "map", None)):
        return "this Corral's client has no map() yet (the `call` task kind): calls skipped"
    return None


def _map(client: Any, items: list[int]) -> list[Any]:
    return list(client.map(TARGET, items))


async def calls(tasks: int, roundtrips: int, workers: int, slots: int,
                db: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``tasks`` no-op calls in one ``map`` end to end (tasks/s, CPU per task by process),
    then ``roundtrips`` maps of one call each, one at a time (p50/p99)."""
    if why := available():
        return {"skipped": why}
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp, database(db) as db_url:
        async with local_fleet(tmp, workers, slots, db_url) as fleet:
            await fleet.wait_ready()
            with Client(fleet.url, fleet.admin_key) as client:
                await asyncio.to_thread(_map, client, list(range(min(100, tasks))))  # warm
                watch = Stopwatch(fleet.pids())
                results = await asyncio.to_thread(_map, client, list(range(tasks)))
                wall, cpu = watch.stop()
                lat = []
                for i in range(roundtrips):
                    t = time.perf_counter()
                    await asyncio.to_thread(_map, client, [i])
                    lat.append((time.perf_counter() - t) * 1000)
    return {
        "params": {"tasks": tasks, "workers": workers, "max_concurrent_tasks": slots},
        "results": len(results),
        "tasks_per_s": round(tasks / wall, 1),
        "cpu_ms_per_task": cpu_per_job(cpu, tasks),
        "roundtrip_ms": p50_p99(lat),
    }
