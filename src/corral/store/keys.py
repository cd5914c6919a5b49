"""API keys and tenants."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store._dialect import one_writer
from corral.store.tables import api_keys, tenants
from corral.store.tables import signing_keys as signing_keys_t


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar_one())


async def insert(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(api_keys.insert().values(**values))


async def by_hash(conn: AsyncConnection, key_hash: str) -> RowMapping | None:
    """The key and its tenant's status (``tenant_status``)."""
    return await _with_tenant(conn, api_keys.c.key_hash == key_hash)


async def by_id(conn: AsyncConnection, key_id: str) -> RowMapping | None:
    """As ``by_hash``: the key a token was issued for."""
    return await _with_tenant(conn, api_keys.c.id == key_id)


async def _with_tenant(conn: AsyncConnection, where: Any) -> RowMapping | None:
    q = (
        select(api_keys, tenants.c.status.label("tenant_status"))
        .join(tenants, tenants.c.id == api_keys.c.tenant_id)
        .where(where)
    )
    return (await conn.execute(q)).mappings().first()


async def get(conn: AsyncConnection, tenant_id: str, key_id: str) -> RowMapping | None:
    q = select(api_keys).where(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)
    return (await conn.execute(q)).mappings().first()


async def of_tenant(conn: AsyncConnection, tenant_id: str) -> Sequence[RowMapping]:
    q = select(api_keys).where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
    return (await conn.execute(q)).mappings().all()


async def named(conn: AsyncConnection, tenant_id: str, name: str) -> RowMapping | None:
    q = select(api_keys.c.id).where(api_keys.c.tenant_id == tenant_id, api_keys.c.name == name)
    return (await conn.execute(q)).mappings().first()


async def update_key(conn: AsyncConnection, key_id: str, **values: Any) -> bool:
    q = update(api_keys).where(api_keys.c.id == key_id).values(**values)
    return bool((await conn.execute(q)).rowcount)


async def used(conn: AsyncConnection, key_id: str, now: datetime, before: datetime) -> None:
    """Its last use is ``now``, if what was stored is older than ``before``."""
    q = (
        update(api_keys)
        .where(api_keys.c.id == key_id)
        .where((api_keys.c.last_used_at.is_(None)) | (api_keys.c.last_used_at < before))
        .values(last_used_at=now)
    )
    await conn.execute(q)


async def delete_key(conn: AsyncConnection, key_id: str) -> bool:
    return bool((await conn.execute(delete(api_keys).where(api_keys.c.id == key_id))).rowcount)


async def named_except(
    conn: AsyncConnection, tenant_id: str, name: str, role: str, keep_hash: str
) -> Sequence[RowMapping]:
    """The tenant's keys called ``name`` of ``role``, but the one whose hash is ``keep_hash``."""
    q = select(api_keys).where(
        api_keys.c.tenant_id == tenant_id, api_keys.c.name == name, api_keys.c.role == role,
        api_keys.c.key_hash != keep_hash,
    )  # fmt: skip
    return (await conn.execute(q)).mappings().all()


# ---- tenants ----------------------------------------------------------------------------


async def insert_tenant(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(tenants.insert().values(**values))


async def tenant(
    conn: AsyncConnection, tenant_id: str, *, share: bool = False
) -> RowMapping | None:
    """``share`` holds the row against a suspension until commit (FOR SHARE on PostgreSQL;
    SQLite has one writer): a suspension that started first is waited for, and seen."""
    q = select(tenants).where(tenants.c.id == tenant_id)
    if share and not one_writer(conn):
        q = q.with_for_update(read=True)
    return (await conn.execute(q)).mappings().first()


async def tenant_named(conn: AsyncConnection, name: str) -> RowMapping | None:
    return (await conn.execute(select(tenants).where(tenants.c.name == name))).mappings().first()


async def all_tenants(conn: AsyncConnection) -> Sequence[RowMapping]:
    return (await conn.execute(select(tenants).order_by(tenants.c.created_at))).mappings().all()


async def update_tenant(conn: AsyncConnection, tenant_id: str, **values: Any) -> None:
    await conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(**values))


async def set_tenant_status(
    conn: AsyncConnection, tenant_id: str, frm: str, to: str, **values: Any
) -> bool:
    q = (
        update(tenants)
        .where(tenants.c.id == tenant_id, tenants.c.status == frm)
        .values(status=to, **values)
    )
    return bool((await conn.execute(q)).rowcount)


# ---- the keys that sign API tokens ------------------------------------------------------


async def signing_keys(conn: AsyncConnection) -> Sequence[RowMapping]:
    """Newest first."""
    q = select(signing_keys_t).order_by(signing_keys_t.c.created_at.desc())
    return (await conn.execute(q)).mappings().all()


async def insert_signing_key(conn: AsyncConnection, values: dict[str, Any]) -> None:
    await conn.execute(signing_keys_t.insert().values(**values))


async def prune_signing_keys(conn: AsyncConnection, cutoff: datetime) -> int:
    q = delete(signing_keys_t).where(signing_keys_t.c.created_at < cutoff)
    return int((await conn.execute(q)).rowcount or 0)
