"""A job's reported metrics: stored as they arrive with its output, read back as series."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store.tables import jobs, metrics


async def add(
    conn: AsyncConnection, job_id: str, rows: Sequence[Mapping[str, Any]], *, cap: int
) -> int:
    """Store ``rows`` (tenant_id, attempt, step, name, value, at) of one job, as many as its
    cap has room for; how many were stored."""
    q = (
        update(jobs).where(jobs.c.id == job_id, jobs.c.metric_points < cap)
        .values(metric_points=jobs.c.metric_points + len(rows))
        .returning(jobs.c.metric_points)
    )  # fmt: skip
    total: int | None = (await conn.execute(q)).scalar()
    if total is None:
        return 0  # full already
    room = len(rows) - max(0, total - cap)
    if room < len(rows):
        await conn.execute(update(jobs).where(jobs.c.id == job_id).values(metric_points=cap))
    if room > 0:
        await conn.execute(metrics.insert(), [{"job_id": job_id, **r} for r in rows[:room]])
    return room


async def series(
    conn: AsyncConnection, tenant_id: str, job_id: str, *, names: Sequence[str] = (),
    after_id: int = 0, limit: int,
) -> Sequence[RowMapping]:  # fmt: skip
    """Points in the order they were stored, after ``after_id``."""
    q = select(metrics.c.id, metrics.c.attempt, metrics.c.step, metrics.c.name,
               metrics.c.value, metrics.c.at).where(
        metrics.c.tenant_id == tenant_id, metrics.c.job_id == job_id, metrics.c.id > after_id
    )  # fmt: skip
    if names:
        q = q.where(metrics.c.name.in_(list(names)))
    return (await conn.execute(q.order_by(metrics.c.id).limit(limit))).mappings().all()


async def last_of(
    conn: AsyncConnection, tenant_id: str, job_ids: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """job id -> each metric's last reported value, for a page of jobs, in one statement."""
    if not job_ids:
        return {}
    newest = (
        select(func.max(metrics.c.id))
        .where(metrics.c.tenant_id == tenant_id, metrics.c.job_id.in_(list(job_ids)))
        .group_by(metrics.c.job_id, metrics.c.name)
    )
    q = select(metrics.c.job_id, metrics.c.name, metrics.c.value).where(metrics.c.id.in_(newest))
    found: dict[str, dict[str, float | None]] = {}
    for job_id, name, value in await conn.execute(q):
        found.setdefault(job_id, {})[name] = value
    return found
