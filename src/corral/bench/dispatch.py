"""A process per job through a fresh coordinator and local workers: throughput under a
backlog (``dispatch``) and one job at a time on an idle fleet (``roundtrip``)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from corral.bench._stats import Stopwatch, database, machine, now_iso, p50_p99, rss_mib
from corral.client import AsyncClient, JobView
from corral.local import LocalFleet
from corral.model import ACTIVE_JOB_STATES, JobState


def local_fleet(tmp: str, workers: int, slots: int, db_url: str | None, **kw: Any) -> LocalFleet:
    """The coordinator as a child process, so the client that measures does not share its
    interpreter. Its workers run jobs as ``corral worker`` does by default, without the
    sandbox ``corral up`` gives them (docs/PERFORMANCE.md has what a sandbox costs)."""
    env = {"CORRAL_WORKER__SANDBOX": "off", **kw.pop("worker_env", {})}
    return LocalFleet(
        data_dir=Path(tmp),
        worker_env=env,
        workers=workers,
        port=0,
        slots=slots,
        server_process=True,
        worker_log_level="warning",
        db_url=db_url,
        **kw,
    )


async def _active(client: AsyncClient) -> int:
    """1 while any job is queued or active, else 0: one cheap query."""
    states = [JobState.QUEUED, *ACTIVE_JOB_STATES]
    return len([j async for j in client.jobs(state=states, limit=1)])


async def one_at_a_time(
    client: AsyncClient, command: list[str], count: int, labels: dict[str, str] | None = None
) -> tuple[list[JobView], list[float]]:
    """Jobs submitted on an idle fleet, each after the previous one ended: dispatch latency
    without a queue in front of it. Also the client's own wall time, submit to result."""
    done, wall_ms = [], []
    for _ in range(count):
        t0 = time.perf_counter()
        job = await client.submit(command, retries=0, labels=labels)
        async for _line in client.logs(job.id, follow=True):
            pass  # its output stream ends when the job has
        done.append(await client.job(job.id))
        wall_ms.append((time.perf_counter() - t0) * 1000)
    return done, wall_ms


def cpu_per_job(cpu: dict[str, float], jobs: int) -> dict[str, float]:
    """ms per job by role; workers summed (their count varies), their jobs with them."""
    per = {role: s * 1000 / jobs for role, s in cpu.items()}
    workers = sum(v for role, v in per.items() if role.startswith("local-"))
    out = {k: round(v, 2) for k, v in per.items() if not k.startswith("local-")}
    out["workers and their jobs"] = round(workers, 2)
    out["total"] = round(sum(per.values()), 2)
    return out


def ms_between(jobs: list[JobView], until: str) -> dict[str, float]:
    """p50/p99 from a job's creation to ``until`` (started_at, finished_at), by the
    coordinator's own clock."""
    values = [
        (getattr(j, until) - j.created_at).total_seconds() * 1000 for j in jobs if getattr(j, until)
    ]
    return {k: round(v, 1) for k, v in p50_p99(values).items()}


async def dispatch(
    jobs: int,
    workers: int,
    slots: int,
    command: list[str],
    concurrency: int = 16,
    idle_jobs: int = 0,
    db: str | None = None,
) -> dict[str, Any]:
    """N jobs submitted with ``concurrency`` requests in flight, until all have ended; then
    ``idle_jobs`` one at a time. The JSON field names are those bench/dispatch.py has always
    written (scripts compare runs by them)."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp, database(db) as db_url:
        async with local_fleet(tmp, workers, slots, db_url) as fleet:
            await fleet.wait_ready()
            async with fleet.client() as client:
                gate = asyncio.Semaphore(concurrency)

                async def submit_one() -> None:
                    async with gate:
                        await client.submit(command, retries=0)

                pids = fleet.pids()
                watch = Stopwatch(pids)
                t0 = time.perf_counter()
                await asyncio.gather(*(submit_one() for _ in range(jobs)))
                t_submitted = time.perf_counter()
                # One cheap query polled: a stream per job would load what is measured.
                while await _active(client):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                total_s, cpu = watch.stop()
                rss = {role: rss_mib(pid) for role, pid in pids.items()}
                done = [j async for j in client.jobs()]
                idle, _ = await one_at_a_time(client, command, idle_jobs)

    states = {s: sum(1 for j in done if j.state == s) for s in {j.state for j in done}}
    return {
        "params": {
            "jobs": jobs,
            "workers": workers,
            "max_concurrent_tasks": slots,
            "command": command,
            "submit_concurrency": concurrency,
            "idle_jobs": idle_jobs,
            "db": "postgresql" if db_url else "sqlite",
        },
        "machine": machine(),
        "when": now_iso(),
        "states": states,
        "submit_s": round(t_submitted - t0, 3),
        "total_s": round(total_s, 3),
        "submit_per_s": round(jobs / (t_submitted - t0), 1),
        "jobs_per_s": round(jobs / total_s, 1),
        "cpu_ms_per_job": cpu_per_job(cpu, jobs),
        "rss_mib": rss,
        "submit_to_start_ms": ms_between(done, "started_at"),
        "submit_to_end_ms": ms_between(done, "finished_at"),
        "idle_submit_to_start_ms": ms_between(idle, "started_at"),
        "idle_submit_to_end_ms": ms_between(idle, "finished_at"),
    }


async def roundtrip(
    count: int, workers: int = 1, slots: int = 1, db: str | None = None
) -> dict[str, Any]:
    """One ``true`` job at a time on an idle fleet: submit to result, by the coordinator's
    clock (created → finished) and by the client's (the submit call → the job read back)."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp, database(db) as db_url:
        async with local_fleet(tmp, workers, slots, db_url) as fleet:
            await fleet.wait_ready()
            async with fleet.client() as client:
                await one_at_a_time(client, ["true"], 3)  # warm: connections, imports
                done, wall_ms = await one_at_a_time(client, ["true"], count)
    return {
        "params": {
            "jobs": count,
            "workers": workers,
            "max_concurrent_tasks": slots,
            "db": "postgresql" if db_url else "sqlite",
        },
        "states": {s: sum(1 for j in done if j.state == s) for s in {j.state for j in done}},
        "submit_to_start_ms": ms_between(done, "started_at"),
        "submit_to_end_ms": ms_between(done, "finished_at"),
        "client_submit_to_result_ms": p50_p99(wall_ms),
    }
