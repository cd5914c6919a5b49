"""Worker queries."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.model import TenantStatus, WorkerStatus, check_worker_transition
from corral.store._dialect import insert_ignore, one_writer
from corral.store.tables import registrations, tenants, worker_nonces, workers


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


async def key_of(conn: AsyncConnection, worker_id: str) -> RowMapping | None:
    """What a signed request's worker id needs checked: its tenant, credential and
    certificate (any tenant's: the signature then says whether the caller holds its key)."""
    w = workers.c
    q = select(w.id, w.tenant_id, w.token_hash, w.cert_pem, w.cert_expires_at, w.shared).where(
        w.id == worker_id
    )
    return (await conn.execute(q)).mappings().first()


async def use_nonce(
    conn: AsyncConnection, worker_id: str, nonce: str, expires_at: datetime
) -> bool:
    """False if this worker's nonce was seen before (and is still remembered): a replay.
    In the request's own transaction, so a request that fails leaves its nonce unused."""
    q = insert_ignore(conn, worker_nonces).values(
        worker_id=worker_id, nonce=nonce, expires_at=expires_at
    )
    # RETURNING, not rowcount: a driver may not count an INSERT's rows.
    return (await conn.execute(q.returning(worker_nonces.c.nonce))).first() is not None


async def prune_nonces(conn: AsyncConnection, now: datetime) -> int:
    """Forget nonces past their window (a request that old is refused by its timestamp) and
    registration tokens past their end."""
    n = (await conn.execute(delete(worker_nonces).where(worker_nonces.c.expires_at < now))).rowcount
    await conn.execute(delete(registrations).where(registrations.c.expires_at < now))
    return int(n or 0)


async def insert_registration(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(registrations.insert().values(**values))


async def registration(conn: AsyncConnection, token_hash: str) -> RowMapping | None:
    q = select(registrations).where(registrations.c.token_hash == token_hash)
    return (await conn.execute(q)).mappings().first()


async def use_registration(conn: AsyncConnection, reg_id: str, now: datetime) -> bool:
    """Guarded: it is used once, and not after it ends."""
    q = update(registrations).where(
        registrations.c.id == reg_id, registrations.c.used_at.is_(None),
        registrations.c.expires_at > now,
    ).values(used_at=now)  # fmt: skip
    return bool((await conn.execute(q)).rowcount == 1)


async def all_of(
    conn: AsyncConnection, tenant_id: str, *, limit: int | None = None, offset: int = 0
) -> Sequence[RowMapping]:
    q = (select(workers).where(workers.c.tenant_id == tenant_id)
         .order_by(workers.c.created_at, workers.c.id).limit(limit).offset(offset))  # fmt: skip
    return (await conn.execute(q)).mappings().all()


async def count_of(conn: AsyncConnection, tenant_id: str) -> int:
    q = select(func.count()).select_from(workers).where(workers.c.tenant_id == tenant_id)
    return int((await conn.execute(q)).scalar_one())


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


async def shared(conn: AsyncConnection) -> Sequence[RowMapping]:
    """The workers that serve every tenant."""
    q = select(workers).where(workers.c.shared).order_by(workers.c.created_at)
    return (await conn.execute(q)).mappings().all()


async def tenant_limits(
    conn: AsyncConnection,
) -> tuple[set[str], dict[str, tuple[int | None, int | None]]]:
    """The tenants that are not active (suspended: none of their workers takes work), and
    the quotas of those that have any (tenant -> max running jobs, max GPUs), in one read."""
    t = tenants.c
    q = select(t.id, t.status, t.max_running_jobs, t.max_gpus).where(
        or_(t.status != TenantStatus.ACTIVE.value, t.max_running_jobs.is_not(None),
            t.max_gpus.is_not(None))
    )  # fmt: skip
    inactive: set[str] = set()
    quotas: dict[str, tuple[int | None, int | None]] = {}
    for tid, status, jobs, gpus in (await conn.execute(q)).all():
        if status != TenantStatus.ACTIVE.value:
            inactive.add(tid)
        elif jobs is not None or gpus is not None:
            quotas[tid] = (jobs, gpus)
    return inactive, quotas


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
