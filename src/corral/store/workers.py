"""Worker queries."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.model import TenantStatus, WorkerStatus, check_worker_transition
from corral.store._dialect import one_writer
from corral.store.tables import tenants, workers


async def insert(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(workers.insert().values(**values))


async def get(
    conn: AsyncConnection, tenant_id: str, worker_id: str, *, for_update: bool = False
) -> RowMapping | None:
    """``for_update`` locks the row until commit (PostgreSQL; SQLite has one writer)."""
    q = select(workers).where(workers.c.id == worker_id, workers.c.tenant_id == tenant_id)
    if for_update:
        q = q.with_for_update(key_share=True)  # FOR NO KEY UPDATE: FK inserts still pass
    return (await conn.execute(q)).mappings().first()


async def token_of(
    conn: AsyncConnection, tenant_id: str, worker_id: str, *, for_update: bool = False
) -> RowMapping | None:
    """Only the worker's token hash (``get`` without the rest of the row)."""
    q = select(workers.c.token_hash).where(
        workers.c.id == worker_id, workers.c.tenant_id == tenant_id
    )
    if for_update:
        q = q.with_for_update(key_share=True)
    return (await conn.execute(q)).mappings().first()


async def by_token_hash(conn: AsyncConnection, token_hash: str) -> RowMapping | None:
    q = select(workers).where(workers.c.token_hash == token_hash)
    return (await conn.execute(q)).mappings().first()


async def all_of(conn: AsyncConnection, tenant_id: str) -> Sequence[RowMapping]:
    q = select(workers).where(workers.c.tenant_id == tenant_id).order_by(workers.c.created_at)
    return (await conn.execute(q)).mappings().all()


async def locked_of(conn: AsyncConnection, tenant_id: str) -> Sequence[RowMapping]:
    """The tenant's workers, locked until commit in id order (PostgreSQL; SQLite has one
    writer), as a dispatch round locks them."""
    q = select(workers).where(workers.c.tenant_id == tenant_id).order_by(workers.c.id)
    if not one_writer(conn):
        q = q.with_for_update(key_share=True)
    return (await conn.execute(q)).mappings().all()


async def by_ids(conn: AsyncConnection, ids: Collection[str]) -> Sequence[RowMapping]:
    if not ids:
        return []
    return (await conn.execute(select(workers).where(workers.c.id.in_(list(ids))))).mappings().all()


async def of_active_tenants(conn: AsyncConnection, ids: Collection[str]) -> Sequence[RowMapping]:
    """Of ``ids``, the workers whose tenant is active: a suspended tenant's worker is never
    offered work, even if it were still connected."""
    if not ids:
        return []
    active = select(tenants.c.id).where(tenants.c.status == TenantStatus.ACTIVE.value)
    q = select(workers).where(workers.c.id.in_(list(ids)), workers.c.tenant_id.in_(active))
    return (await conn.execute(q)).mappings().all()


async def lock(conn: AsyncConnection, worker_id: str) -> None:
    """Lock the worker's row until commit (PostgreSQL; SQLite has one writer). The lock
    order is the worker before its jobs, everywhere (see docs/architecture.md)."""
    if one_writer(conn):
        return
    q = select(workers.c.id).where(workers.c.id == worker_id).with_for_update(key_share=True)
    await conn.execute(q)


async def lock_dispatchable(conn: AsyncConnection, ids: Collection[str]) -> Sequence[RowMapping]:
    """Of ``ids``, those still IDLE, read again and locked until commit (in id order, so
    two coordinators never wait on each other) against a drain or a loss meanwhile."""
    q = (
        select(workers)
        .where(workers.c.id.in_(list(ids)), workers.c.status == WorkerStatus.IDLE.value)
        .order_by(workers.c.id)
        .with_for_update(key_share=True)
    )
    return (await conn.execute(q)).mappings().all()


async def set_status(
    conn: AsyncConnection, worker_id: str, expected: WorkerStatus, to: WorkerStatus, **values: Any
) -> bool:
    check_worker_transition(expected, to)
    q = update(workers).where(workers.c.id == worker_id, workers.c.status == expected.value)
    return (await conn.execute(q.values(status=to.value, **values))).rowcount == 1


async def update_fields(conn: AsyncConnection, worker_id: str, **values: Any) -> None:
    await conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))


async def silent_since(conn: AsyncConnection, cutoff: datetime) -> Sequence[RowMapping]:
    """Workers not offline not heard from since ``cutoff`` (one never heard from at all
    counts from its creation)."""
    heard = func.coalesce(workers.c.last_heartbeat, workers.c.created_at)
    q = select(workers).where(workers.c.status != WorkerStatus.OFFLINE.value, heard < cutoff)
    return (await conn.execute(q)).mappings().all()


async def delete_offline(conn: AsyncConnection, worker_id: str) -> bool:
    q = delete(workers).where(
        workers.c.id == worker_id, workers.c.status == WorkerStatus.OFFLINE.value
    )
    return (await conn.execute(q)).rowcount == 1


async def expired_ephemeral(conn: AsyncConnection, cutoff: datetime) -> Sequence[str]:
    q = select(workers.c.id).where(
        workers.c.status == WorkerStatus.OFFLINE.value,
        workers.c.worker_type == "ephemeral",
        workers.c.offline_since < cutoff,
    )
    return (await conn.execute(q)).scalars().all()
