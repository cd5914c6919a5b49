"""Dispatch benchmark: N no-op jobs through a fresh coordinator and K local workers.

    .venv/bin/python bench/dispatch.py --jobs 1000 --workers 2 --slots 4

Starts a coordinator (a child process, SQLite in a temporary data directory) and K
persistent workers, submits N jobs with C requests in flight, waits until all have ended,
and reports: submit rate, end-to-end jobs/s (first submit to last job ended) and
submit-to-start latency p50/p99 from the coordinator's own timestamps. Prints a table and
writes bench/results/dispatch-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import shlex
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import psutil
import typer
from rich.console import Console
from rich.table import Table

from corral.client import AsyncClient, JobView
from corral.local import LocalFleet
from corral.model import ACTIVE_JOB_STATES, JobState

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``q`` in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds per process so far, its reaped children (a worker's jobs) included."""
    out = {}
    for role, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        out[role] = t.user + t.system + t.children_user + t.children_system
    out["bench client"] = time.process_time()
    return out


async def _active(client: AsyncClient) -> int:
    """1 while any job is queued or active, else 0: one cheap query."""
    states = [JobState.QUEUED, *ACTIVE_JOB_STATES]
    return len([j async for j in client.jobs(state=states, limit=1)])


async def _one_at_a_time(client: AsyncClient, command: list[str], count: int) -> list[JobView]:
    """Jobs submitted on an idle fleet, each after the previous one ended: dispatch latency
    without a queue in front of it."""
    done = []
    for _ in range(count):
        job = await client.submit(command, retries=0)
        async for _line in client.logs(job.id, follow=True):
            pass  # its output stream ends when the job has
        done.append(await client.job(job.id))
    return done


def _cpu_per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    """Workers summed, since their count varies; jobs' own processes count with them."""
    per = {role: (after[role] - before[role]) * 1000 / jobs for role in after}
    workers = sum(v for role, v in per.items() if role.startswith("local-"))
    out = {k: round(v, 2) for k, v in per.items() if not k.startswith("local-")}
    out["workers and their jobs"] = round(workers, 2)
    out["total"] = round(sum(per.values()), 2)
    return out


def _ms(jobs: list[JobView], until: str) -> dict[str, float]:
    values = [
        (getattr(j, until) - j.created_at).total_seconds() * 1000 for j in jobs if getattr(j, until)
    ]
    if not values:
        return {}
    return {"p50": round(percentile(values, 50), 1), "p99": round(percentile(values, 99), 1)}


async def bench(
    jobs: int, workers: int, slots: int, command: list[str], concurrency: int, idle_jobs: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp:
        fleet = LocalFleet(
            data_dir=Path(tmp),
            workers=workers,
            port=0,
            slots=slots,
            server_process=True,
            worker_log_level="warning",
        )
        async with fleet:
            await fleet.wait_ready()
            async with fleet.client() as client:
                gate = asyncio.Semaphore(concurrency)

                async def submit_one() -> None:
                    async with gate:
                        await client.submit(command, retries=0)

                cpu0 = _cpu_s(fleet.pids())
                t0 = time.perf_counter()
                await asyncio.gather(*(submit_one() for _ in range(jobs)))
                t_submitted = time.perf_counter()
                # One cheap query polled: a stream per job would load what is measured.
                while await _active(client):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                t_done = time.perf_counter()
                cpu1 = _cpu_s(fleet.pids())
                done = [j async for j in client.jobs()]
                idle = await _one_at_a_time(client, command, idle_jobs)

    states = {s: sum(1 for j in done if j.state == s) for s in {j.state for j in done}}
    return {
        "params": {
            "jobs": jobs,
            "workers": workers,
            "max_concurrent_tasks": slots,
            "command": command,
            "submit_concurrency": concurrency,
            "idle_jobs": idle_jobs,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "states": states,
        "submit_s": round(t_submitted - t0, 3),
        "total_s": round(t_done - t0, 3),
        "submit_per_s": round(jobs / (t_submitted - t0), 1),
        "jobs_per_s": round(jobs / (t_done - t0), 1),
        "cpu_ms_per_job": _cpu_per_job(cpu0, cpu1, jobs),
        "submit_to_start_ms": _ms(done, "started_at"),
        "submit_to_end_ms": _ms(done, "finished_at"),
        "idle_submit_to_start_ms": _ms(idle, "started_at"),
        "idle_submit_to_end_ms": _ms(idle, "finished_at"),
    }


def main(
    jobs: Annotated[int, typer.Option(min=1, help="No-op jobs to run.")] = 1000,
    workers: Annotated[int, typer.Option(min=1, help="Local persistent workers.")] = 2,
    slots: Annotated[int, typer.Option(min=1, help="--max-concurrent-tasks per worker.")] = 4,
    command: Annotated[str, typer.Option(help="The job's command.")] = "true",
    concurrency: Annotated[int, typer.Option(min=1, help="Submits in flight.")] = 16,
    idle_jobs: Annotated[
        int, typer.Option(min=0, help="Then this many, one at a time, on an idle fleet.")
    ] = 50,
    out: Annotated[Path | None, typer.Option(help="JSON file to write.")] = None,
) -> None:
    """Measure submit rate, end-to-end throughput and dispatch latency."""
    result = asyncio.run(bench(jobs, workers, slots, shlex.split(command), concurrency, idle_jobs))
    table = Table(title="dispatch benchmark", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("jobs / workers x slots", f"{jobs} / {workers} x {slots}")
    table.add_row("command", command)
    table.add_row("outcome", ", ".join(f"{n} {s}" for s, n in sorted(result["states"].items())))
    table.add_row("submit rate", f"{result['submit_per_s']:.0f} jobs/s")
    table.add_row("end to end", f"{result['jobs_per_s']:.0f} jobs/s ({result['total_s']:.2f}s)")
    for key, label in (
        ("submit_to_start_ms", "submit→start"),
        ("submit_to_end_ms", "submit→end"),
        ("idle_submit_to_start_ms", f"one at a time ({idle_jobs}): submit→start"),
        ("idle_submit_to_end_ms", f"one at a time ({idle_jobs}): submit→end"),
    ):
        if result[key]:
            table.add_row(f"{label} p50 / p99", f"{result[key]['p50']} / {result[key]['p99']} ms")
    for role, ms in result["cpu_ms_per_job"].items():
        table.add_row(f"CPU per job: {role}", f"{ms} ms")
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS / f"dispatch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")
    if set(result["states"]) != {JobState.SUCCEEDED}:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
