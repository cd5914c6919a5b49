"""The history: every change of a job's or a worker's state, with its cause."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store.tables import history


async def append(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """One statement for every entry of a transaction, in order (ids follow it)."""
    if rows:
        await conn.execute(history.insert(), list(rows))


async def page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    job_id: str | None = None,
    worker_id: str | None = None,
    after: int = 0,
    limit: int = 100,
) -> Sequence[RowMapping]:
    """Oldest first, from after entry ``after``. A worker's history is its own entries
    (``worker.*``), not those of every job it ran."""
    q = select(history).where(history.c.tenant_id == tenant_id, history.c.id > after)
    if job_id is not None:
        q = q.where(history.c.job_id == job_id)
    if worker_id is not None:
        q = q.where(history.c.worker_id == worker_id, history.c.kind.like("worker.%"))
    q = q.order_by(history.c.id).limit(limit)
    return (await conn.execute(q)).mappings().all()


async def prune(conn: AsyncConnection, cutoff: datetime, limit: int = 10_000) -> int:
    """Drop up to ``limit`` entries older than ``cutoff``; returns how many went. Bounded,
    so one reaper tick never holds the store for long after a quiet month."""
    ids = select(history.c.id).where(history.c.at < cutoff).order_by(history.c.id).limit(limit)
    res = await conn.execute(delete(history).where(history.c.id.in_(ids.scalar_subquery())))
    return int(res.rowcount or 0)


async def audit(
    conn: AsyncConnection, tenant_id: str | None, *, after: int, limit: int,
    since: datetime | None = None, actor: str | None = None, action: str | None = None,
) -> Sequence[RowMapping]:  # fmt: skip
    """Oldest first, from after entry ``after``: a tenant's entries (None: every tenant's),
    from ``since``, by ``actor``, of kind ``action`` (``key.*``: every kind it begins)."""
    q = select(history).where(history.c.id > after)
    if tenant_id is not None:
        q = q.where(history.c.tenant_id == tenant_id)
    if since is not None:
        q = q.where(history.c.at >= since)
    if actor is not None:
        q = q.where(history.c.actor == actor)
    if action is not None:
        if action.endswith("*"):
            prefix = action[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            q = q.where(history.c.kind.like(f"{prefix}%", escape="\\"))
        else:
            q = q.where(history.c.kind == action)
    return (await conn.execute(q.order_by(history.c.id).limit(limit))).mappings().all()
