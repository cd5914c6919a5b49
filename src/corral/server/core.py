"""What every part of the coordinator shares, and the one transaction helper that
turns committed changes into wake-ups (streams, followers, the dispatcher)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from corral.server.clock import Clock
from corral.server.config import ServerSettings
from corral.server.hub import Hub
from corral.store import Store


@dataclass
class Tx:
    conn: AsyncConnection
    jobs: set[str] = field(default_factory=set)  # their state or logs changed
    workers: set[str] = field(default_factory=set)  # their event outbox grew
    kick: bool = False  # the dispatcher may have work


@dataclass
class Core:
    store: Store
    hub: Hub
    clock: Clock
    settings: ServerSettings
    kick_dispatcher: Callable[[], None] = lambda: None
    started_at: datetime | None = None  # when this coordinator began serving

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[Tx]:
        """One transaction; its wake-ups go out only once it has committed."""
        async with self.store.tx() as conn:
            t = Tx(conn)
            yield t
        for job_id in t.jobs:
            self.hub.jobs.notify(job_id)
        for worker_id in t.workers:
            self.hub.workers.notify(worker_id)
        if t.kick:
            self.kick_dispatcher()
