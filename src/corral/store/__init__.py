"""Persistence: SQLAlchemy Core tables, named queries, Alembic migrations.

Callers open one transaction with ``Store.tx()`` and pass its connection to the
query functions in ``store.jobs``, ``store.workers``, ``store.keys`` and ``store.streams``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import overload

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from corral.store._dialect import one_writer
from corral.store.db import default_url, migrate, open_engine


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = open_engine(url)
        self.dialect = self.engine.dialect.name

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    async def close(self) -> None:
        await self.engine.dispose()


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything Corral stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


__all__ = ["Store", "as_utc", "default_url", "migrate", "one_writer"]
