"""API keys and tenants."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.store.tables import api_keys


async def count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(api_keys))).scalar_one())


async def insert(
    conn: AsyncConnection, *, id: str, tenant_id: str, name: str, key_hash: str, role: str,
    now: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        api_keys.insert().values(
            id=id, tenant_id=tenant_id, name=name, key_hash=key_hash, role=role, created_at=now
        )
    )


async def by_hash(conn: AsyncConnection, key_hash: str) -> RowMapping | None:
    row = await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))
    return row.mappings().first()


async def delete_named_except(conn: AsyncConnection, name: str, keep_hash: str) -> int:
    """Drop the keys called ``name`` but the one whose hash is ``keep_hash``."""
    q = delete(api_keys).where(api_keys.c.name == name, api_keys.c.key_hash != keep_hash)
    return int((await conn.execute(q)).rowcount or 0)
