"""What every part of the coordinator shares, and the one transaction helper: a stimulus's
changes are applied inside it (``Tx.apply``), and what must follow a commit — wake-ups,
ended streams, one log line per change — runs only once it has committed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.model.changes import Change
from corral.model.snapshot import Policy
from corral.server import cause
from corral.server.apply import apply
from corral.server.auth import Credentials, Refusals
from corral.server.clock import Clock
from corral.server.config import ServerSettings
from corral.server.follows import Follows
from corral.server.hub import Hub
from corral.server.telemetry import Telemetry
from corral.server.tokens import Signer
from corral.store import Store
from corral.store import history as history_q
from corral.store.blobs import BlobStore

log = structlog.get_logger("corral.server")

# Named points inside a transaction where a test (a race, paused on purpose) or, later, a
# plugin may run code: "moved" (a job's move landed), "notified" (an outbox event was
# written), "report.read" (a report has read its job), "round.planned" (a dispatch round has
# chosen, before it locks and assigns; inside its transaction, with ``tx``), "round.done"
# (after a round's transaction ended). Each is called with keyword facts.
Hook = Callable[..., Awaitable[None]]


@dataclass
class Tx:
    conn: AsyncConnection
    now: datetime
    cause: str
    actor: str | None
    policy: Policy
    source: str | None = None  # the address of the request that made the changes
    jobs: set[str] = field(default_factory=set)  # their state, logs or history changed
    workers: set[str] = field(default_factory=set)  # their event outbox grew
    changed_workers: set[str] = field(default_factory=set)  # their row changed
    kick: bool = False  # the dispatcher may have work
    end_streams: set[str] = field(default_factory=set)
    forget_drops: set[str] = field(default_factory=set)
    forget_keys: set[str] = field(default_factory=set)  # rotated or revoked: refuse at once
    forget_tenants: set[str] = field(default_factory=set)  # suspended: its keys too
    entries: list[dict[str, Any]] = field(default_factory=list)  # history rows to write
    hooks: dict[str, Hook] = field(default_factory=dict)

    async def at(self, point: str, **facts: Any) -> None:
        hook = self.hooks.get(point)
        if hook is not None:
            await hook(tx=self, **facts)

    async def apply(self, changes: Iterable[Change]) -> list[Change]:
        """Carry out a decision; returns the guarded changes that did not land (someone
        else moved the job or worker first)."""
        return await apply(self, changes)


def policy_of(settings: ServerSettings) -> Policy:
    return Policy(
        retry_backoff_base_s=settings.retry_backoff_base_s,
        retry_backoff_cap_s=settings.retry_backoff_cap_s,
        unclaimed_grace_s=settings.unclaimed_grace_s,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
    )


@dataclass
class Core:
    store: Store
    hub: Hub
    clock: Clock
    settings: ServerSettings
    kick_dispatcher: Callable[[], None] = lambda: None
    # Told after each commit which workers' rows changed (None: any of them, a tenant's
    # status changed): the dispatcher keeps their snapshots between rounds.
    workers_changed: Callable[[Collection[str] | None], None] = lambda ids: None
    # Since when this coordinator has been able to listen: its start, or the end of the
    # last stretch it could not act (frozen, or its database unreachable). A worker's
    # silence counts only from here (see reaper.listening).
    listening_since: datetime | None = None
    monotonic: Callable[[], float] = time.monotonic  # real time the process could act
    acted_at: float | None = None  # monotonic time the reaper last completed a tick
    hooks: dict[str, Hook] = field(default_factory=dict)
    credentials: Credentials = field(default_factory=Credentials)
    tokens: Signer = field(default_factory=Signer)
    refusals: Refusals = field(init=False)  # what each address has been refused lately
    follows: Follows = field(init=False)  # long-lived answers open, per API key
    ca: Any = None  # the internal CA's (certificate, key): it signs workers' certificates
    blobs: BlobStore | None = None  # packed working directories, checkpoints, outputs
    telemetry: Telemetry = field(default_factory=Telemetry)  # GET /metrics

    def __post_init__(self) -> None:
        self.policy = policy_of(self.settings)
        self.refusals = Refusals(self.settings.auth_failures_per_minute,
                                 self.settings.self_onboarding_per_hour)  # fmt: skip
        self.follows = Follows(self.settings.follow_streams_per_key)
        self.acted_at = self.monotonic()  # a gap from the start counts too
        self.store.on_tx = self.telemetry.tx.observe
        self.telemetry.streams_open.set_function(self.hub.streams_open)

    @asynccontextmanager
    async def tx(self, actor: str | None = None) -> AsyncIterator[Tx]:
        """One transaction; what follows from it goes out only once it has committed."""
        async with self.store.tx() as conn:
            t = Tx(conn, self.clock.now(), cause.current(), actor, self.policy,
                   source=cause.source(), hooks=self.hooks)  # fmt: skip
            yield t
            await history_q.append(conn, t.entries)
        self._after_commit(t)

    def _after_commit(self, t: Tx) -> None:
        observe = self.telemetry.observe
        for entry in t.entries:
            log.info(entry["kind"], **{k: v for k, v in entry.items() if k in _LOGGED and v})
            observe(entry)
        for key_id in t.forget_keys:
            self.credentials.forget_key(key_id)
        for tenant_id in t.forget_tenants:
            self.credentials.forget_tenant(tenant_id)
        if t.forget_tenants:
            self.workers_changed(None)
        elif t.changed_workers:
            self.workers_changed(t.changed_workers)
        for worker_id in t.forget_drops:
            self.hub.forget(worker_id)
        for worker_id in t.end_streams:
            self.hub.end_stream(worker_id)
        for job_id in t.jobs:
            self.hub.jobs.notify(job_id)
        for worker_id in t.workers:
            self.hub.workers.notify(worker_id)
        if t.kick:
            self.kick_dispatcher()


# The fields of a history entry that its log line carries.
_LOGGED = ("job_id", "worker_id", "attempt", "to_state", "reason", "message", "actor", "cause")
