"""A worker SIGKILLed while it runs a job: how long until that job runs again on another
worker, with the coordinator's default settings (stream grace, reaper interval, retry
backoff)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
from datetime import UTC, datetime
from typing import Any

from corral.bench._stats import database, p50_p99
from corral.bench.dispatch import local_fleet
from corral.client import AsyncClient, JobView
from corral.model import JobState
from corral.protocol import AttemptView

# Long enough to be seen running; short enough that the orphan a killed worker leaves
# (a job leads its own process group) ends by itself soon after.
JOB = ["sleep", "3"]


async def _until(client: AsyncClient, job_id: str, ok: Any, timeout_s: float) -> JobView:
    async with asyncio.timeout(timeout_s):
        while True:
            job = await client.job(job_id)
            if ok(job):
                return job
            await asyncio.sleep(0.05)


def _started_after(job: JobView, number: int) -> AttemptView | None:
    """Its first attempt after ``number`` that has started, if any."""
    later = [a for a in job.attempts or [] if a.number > number and a.started_at is not None]
    return min(later, key=lambda a: a.number) if later else None


async def kill(kills: int, db: str | None = None, timeout_s: float = 120) -> dict[str, Any]:
    """``kills`` rounds on a fleet of ``kills + 1`` one-slot workers: each round kills the
    worker that runs the round's job, so another one is always left."""
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp, database(db) as db_url:
        async with local_fleet(tmp, kills + 1, 1, db_url) as fleet:
            await fleet.wait_ready()
            procs = {w.name: w.proc for w in fleet.local_workers}
            async with fleet.client() as client:
                for _ in range(kills):
                    job = await client.submit(JOB, retries=3)
                    job = await _until(
                        client, job.id, lambda j: j.state == JobState.RUNNING, timeout_s
                    )
                    first = job.attempt
                    victim = (await client.worker(job.worker_id or "")).name
                    proc = procs[victim]
                    assert proc is not None
                    killed_at = datetime.now(UTC)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    await proc.wait()
                    again = await _until(
                        client, job.id, lambda j, n=first: _started_after(j, n), timeout_s
                    )
                    attempt = _started_after(again, first)
                    assert attempt is not None and attempt.started_at is not None
                    rows.append({
                        "victim": victim,
                        "runs_again_on": (await client.worker(attempt.worker_id or "")).name,
                        "kill_to_running_again_s": round(
                            (attempt.started_at - killed_at).total_seconds(), 2
                        ),
                    })  # fmt: skip
                    await client.wait(job.id, timeout=timeout_s)
    values = [float(r["kill_to_running_again_s"]) * 1000 for r in rows]
    return {
        "kills": rows,
        "kill_to_running_again_s": {k: round(v / 1000, 2) for k, v in p50_p99(values).items()},
    }
