"""Persistence: SQLAlchemy Core tables, named queries, Alembic migrations.

Callers open one transaction with ``Store.tx()`` and pass its connection to the
query functions in ``store.jobs``, ``store.workers``, ``store.keys`` and ``store.streams``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import overload

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from corral.model import Unavailable
from corral.store._dialect import one_writer
from corral.store._inline_sqlite import Checkpointer
from corral.store.db import Timeouts, default_url, migrate, open_engine, sqlite_path
from corral.store.tables import probes


class Store:
    def __init__(self, url: str, timeouts: Timeouts | None = None) -> None:
        self.url = url
        self.timeouts = timeouts or Timeouts()
        self.engine: AsyncEngine = open_engine(url, self.timeouts)
        self.dialect = self.engine.dialect.name
        self._checkpointer = (
            Checkpointer(sqlite_path(self.engine.url)) if self.dialect == "sqlite" else None
        )
        # Told each transaction's seconds, its commit included (the coordinator's metrics).
        self.on_tx: Callable[[float], None] | None = None

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[AsyncConnection]:
        """One transaction, given the statement timeout as a whole: a link that swallows
        packets (no error, just silence) fails the transaction instead of hanging it."""
        deadline = asyncio.timeout(self.timeouts.statement_s)
        started = time.perf_counter()
        try:
            async with deadline, self.engine.begin() as conn:
                yield conn
        except TimeoutError as exc:
            if not deadline.expired():
                raise
            raise Unavailable(
                f"the database did not answer within {self.timeouts.statement_s:g}s"
            ) from exc
        finally:
            if self.on_tx is not None:
                self.on_tx(time.perf_counter() - started)

    async def probe(self, now: datetime) -> None:
        """A real write, committed: reachable is not enough when the disk is full."""
        async with self.tx() as conn:
            await conn.execute(update(probes).where(probes.c.id == "readyz").values(at=now))

    async def close(self) -> None:
        await self.engine.dispose()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.close)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything Corral stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


__all__ = ["Store", "Timeouts", "as_utc", "default_url", "migrate", "one_writer"]
