"""Reading the history: a job's or a worker's timeline, a page at a time or followed live."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import RowMapping

from corral.model import InvalidInput, JobState, NotFound
from corral.protocol import EventList, EventView
from corral.server.core import Core
from corral.store import as_utc
from corral.store import history as history_q
from corral.store import jobs as jobs_q
from corral.store import workers as workers_q


def view(row: RowMapping) -> EventView:
    return EventView(
        id=row["id"], at=as_utc(row["at"]), kind=row["kind"], job_id=row["job_id"],
        worker_id=row["worker_id"], attempt=row["attempt"], from_state=row["from_state"],
        to_state=row["to_state"], reason=row["reason"], message=row["message"],
        cause=row["cause"], actor=row["actor"], source=row["source"], tenant_id=row["tenant_id"],
        detail=row["detail"] or {},
    )  # fmt: skip


def cursor_after(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise InvalidInput("cursor is not one this server gave out", field="cursor")
    return int(cursor)


def as_page(rows: Sequence[RowMapping], limit: int) -> EventList:
    events = [view(r) for r in rows]
    more = str(events[-1].id) if len(events) == limit else None
    return EventList(events=events, next_cursor=more)


async def of_job(
    core: Core, tenant_id: str, job_id: str, *, cursor: str | None, limit: int
) -> EventList:
    """Its timeline. A job that is gone from the store keeps its history until the
    retention ends; only a job that never had one is not found."""
    after = cursor_after(cursor)
    async with core.tx() as t:
        rows = await history_q.page(t.conn, tenant_id, job_id=job_id, after=after, limit=limit)
        if not rows and not after and await jobs_q.get(t.conn, tenant_id, job_id) is None:
            raise NotFound(f"no job {job_id}")
    return as_page(rows, limit)


async def of_worker(
    core: Core, tenant_id: str, worker_id: str, *, cursor: str | None, limit: int
) -> EventList:
    after = cursor_after(cursor)
    async with core.tx() as t:
        rows = await history_q.page(t.conn, tenant_id, worker_id=worker_id, after=after,
                                    limit=limit)  # fmt: skip
        if not rows and not after and await workers_q.get(t.conn, tenant_id, worker_id) is None:
            raise NotFound(f"no worker {worker_id}")
    return as_page(rows, limit)


async def job_after(
    core: Core, tenant_id: str, job_id: str, after: int
) -> tuple[list[EventView], JobState | None]:
    """Entries after ``after``, and the job's state when they were read (None: gone)."""
    async with core.tx() as t:
        job = await jobs_q.get(t.conn, tenant_id, job_id)
        rows = await history_q.page(t.conn, tenant_id, job_id=job_id, after=after, limit=500)
    return [view(r) for r in rows], JobState(job["state"]) if job is not None else None
