"""What flows over time: each worker's event outbox and each job's log chunks."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store import workers as workers_q
from corral.store._dialect import insert_ignore
from corral.store.tables import jobs, log_chunks, outbox


async def push_events(
    conn: AsyncConnection, events: Sequence[tuple[str, str, dict[str, Any]]], now: datetime
) -> None:
    """Add events (worker id, tenant id, data) to their workers' outboxes, in order, in one
    statement. Each worker's row is locked first, so one worker's events commit in id order:
    a stream that has sent id N never later finds a smaller id committed behind it (ids
    come from a sequence at insert, not at commit)."""
    for worker_id in sorted({w for w, _, _ in events}):
        await workers_q.lock(conn, worker_id)
    rows = [{"worker_id": w, "tenant_id": t, "type": d["type"], "data": d, "created_at": now}
            for w, t, d in events]  # fmt: skip
    await conn.execute(outbox.insert(), rows)


EVENTS_PAGE = 500  # a worker's events read at a time


async def events_after(
    conn: AsyncConnection, worker_id: str, after_id: int, limit: int = EVENTS_PAGE
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
    conn: AsyncConnection, *, job_id: str, attempt: int, seq: int, tenant_id: str, data: str,
    max_bytes: int,
) -> bool:  # fmt: skip
    """Idempotent: a batch sent twice (retry) is stored once; False for the repeat.

    A job's stored output is capped at ``max_bytes``: past it, the first half of the cap is
    kept whole and the oldest output after it goes, so the newest stays (see ``_cut``)."""
    size = len(data.encode("utf-8"))
    res = await conn.execute(
        insert_ignore(conn, log_chunks)
        .values(job_id=job_id, attempt=attempt, seq=seq, tenant_id=tenant_id, data=data, size=size)
        .returning(log_chunks.c.id)  # rowcount is -1 for this on psycopg
    )
    if res.first() is None:
        return False
    q = (
        update(jobs).where(jobs.c.id == job_id)
        .values(log_bytes=jobs.c.log_bytes + size)
        .returning(jobs.c.log_bytes, jobs.c.log_cut_after)
    )  # fmt: skip
    total, cut_after = (await conn.execute(q)).one()
    if total > max_bytes:
        await _cut(conn, job_id, total - max_bytes, cut_after, max_bytes // 2)
    return True


async def _cut(
    conn: AsyncConnection, job_id: str, excess: int, cut_after: int | None, head: int
) -> None:
    """Drop at least ``excess`` bytes, oldest first, after the head (the chunks within the
    first ``head`` bytes, found once: ``log_cut_after`` is its last chunk)."""
    if cut_after is None:
        cut_after, kept = 0, 0
        sizes = select(log_chunks.c.id, log_chunks.c.size).where(log_chunks.c.job_id == job_id)
        for chunk_id, size in await conn.execute(sizes.order_by(log_chunks.c.id)):
            if kept + size > head:
                break
            kept += size
            cut_after = chunk_id
    q = (
        select(log_chunks.c.id, log_chunks.c.size)
        .where(log_chunks.c.job_id == job_id, log_chunks.c.id > cut_after)
        .order_by(log_chunks.c.id)
        .limit(1000)
    )
    ids, freed = [], 0
    for chunk_id, size in await conn.execute(q):
        ids.append(chunk_id)
        freed += size
        if freed >= excess:
            break
    await conn.execute(delete(log_chunks).where(log_chunks.c.id.in_(ids)))
    await conn.execute(
        update(jobs).where(jobs.c.id == job_id).values(
            log_bytes=jobs.c.log_bytes - freed, log_cut_bytes=jobs.c.log_cut_bytes + freed,
            log_cut_after=cut_after,
        )
    )  # fmt: skip


async def logs_after(
    conn: AsyncConnection, tenant_id: str, job_id: str, after_id: int, limit: int = 16
) -> Sequence[RowMapping]:
    """A page of output after chunk ``after_id``. Small (a chunk holds up to 64 KiB from a
    worker), so each reader of a long log holds little of it at a time."""
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
