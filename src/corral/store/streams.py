"""What flows over time: each worker's event outbox and each job's log chunks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store import workers as workers_q
from corral.store._dialect import insert_ignore
from corral.store.tables import log_chunks, outbox


async def push_event(
    conn: AsyncConnection, *, worker_id: str, tenant_id: str, data: dict[str, Any], now: datetime
) -> None:
    """Add an event to the worker's outbox. The worker's row is locked first, so one
    worker's events commit in id order: a stream that has sent id N never later finds a
    smaller id committed behind it (ids come from a sequence at insert, not at commit)."""
    await workers_q.lock(conn, worker_id)
    await conn.execute(
        outbox.insert().values(
            worker_id=worker_id, tenant_id=tenant_id, type=data["type"], data=data, created_at=now
        )
    )


async def events_after(
    conn: AsyncConnection, worker_id: str, after_id: int, limit: int = 500
) -> Sequence[RowMapping]:
    q = (
        select(outbox.c.id, outbox.c.type, outbox.c.data)
        .where(outbox.c.worker_id == worker_id, outbox.c.id > after_id)
        .order_by(outbox.c.id)
        .limit(limit)
    )
    return (await conn.execute(q)).mappings().all()


async def clear_events(conn: AsyncConnection, worker_id: str) -> None:
    await conn.execute(delete(outbox).where(outbox.c.worker_id == worker_id))


async def prune_events(conn: AsyncConnection, cutoff: datetime) -> None:
    await conn.execute(delete(outbox).where(outbox.c.created_at < cutoff))


async def append_log(
    conn: AsyncConnection, *, job_id: str, attempt: int, seq: int, tenant_id: str, data: str
) -> None:
    """Idempotent: a batch sent twice (retry) is stored once."""
    await conn.execute(
        insert_ignore(conn, log_chunks).values(
            job_id=job_id, attempt=attempt, seq=seq, tenant_id=tenant_id, data=data
        )
    )


async def logs_after(
    conn: AsyncConnection, tenant_id: str, job_id: str, after_id: int, limit: int = 1000
) -> Sequence[RowMapping]:
    q = (
        select(log_chunks.c.id, log_chunks.c.attempt, log_chunks.c.data)
        .where(
            log_chunks.c.job_id == job_id,
            log_chunks.c.tenant_id == tenant_id,
            log_chunks.c.id > after_id,
        )
        .order_by(log_chunks.c.id)
        .limit(limit)
    )
    return (await conn.execute(q)).mappings().all()
