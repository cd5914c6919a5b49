"""Counts of the whole store, for the gauges a scrape of ``/metrics`` reads: read from the
database, so every coordinator of one database gives the same values."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.model import ACTIVE_JOB_STATES, JobState, WorkerStatus
from corral.model.worker import shown_status
from corral.store.tables import jobs, workers

_ACTIVE = [s.value for s in ACTIVE_JOB_STATES]


@dataclass
class Census:
    queued: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)  # tenant ->
    jobs: dict[str, int] = field(default_factory=dict)  # state -> jobs
    workers: dict[str, int] = field(default_factory=dict)  # shown status -> workers
    gpus_total: int = 0  # of workers not offline
    gpus_in_use: int = 0  # held by active attempts


async def census(conn: AsyncConnection) -> Census:
    """Four grouped reads: the queue per tenant, jobs per state, workers and their load."""
    out = Census()
    q = (
        select(jobs.c.tenant_id, func.count(), func.min(jobs.c.created_at))
        .where(jobs.c.state == JobState.QUEUED.value)
        .group_by(jobs.c.tenant_id)
    )
    out.queued = {t: (int(n), oldest) for t, n, oldest in (await conn.execute(q)).all()}
    q = select(jobs.c.state, func.count()).group_by(jobs.c.state)
    out.jobs = {s: int(n) for s, n in (await conn.execute(q)).all()}
    q = (
        select(jobs.c.worker_id, func.count(), func.coalesce(func.sum(jobs.c.gpus), 0))
        .where(jobs.c.state.in_(_ACTIVE), jobs.c.worker_id.is_not(None))
        .group_by(jobs.c.worker_id)
    )
    load = {w: (int(n), int(g)) for w, n, g in (await conn.execute(q)).all()}
    q = select(workers.c.id, workers.c.status, workers.c.paused_at, workers.c.constrained,
               workers.c.gpus)  # fmt: skip
    for wid, status, paused_at, constrained, gpus in (await conn.execute(q)).all():
        running, held = load.get(wid, (0, 0))
        paused = paused_at is not None
        shown = shown_status(WorkerStatus(status), running, bool(constrained), paused)
        out.workers[shown.value] = out.workers.get(shown.value, 0) + 1
        if shown is not WorkerStatus.OFFLINE:
            out.gpus_total += len(gpus or ())
            out.gpus_in_use += held
    return out
