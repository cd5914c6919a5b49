"""The reaper: on a timer, finds what went quiet and puts it back on a consistent path.
Idempotent: every move it makes is a guarded UPDATE, so two ticks never double-count."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from corral.model import AttemptOutcome
from corral.server.core import Core
from corral.server.leases import end_attempt, go_offline
from corral.store import as_utc, streams
from corral.store import jobs as jobs_q
from corral.store import workers as workers_q

log = structlog.get_logger("corral.reaper")


async def tick(core: Core) -> None:
    s = core.settings
    now = core.clock.now()
    timeout = timedelta(seconds=s.heartbeat_timeout_s)
    # Silence while this coordinator was down is not the worker's: after a restart, every
    # worker gets a whole timeout to come back before it is reaped.
    up_long_enough = core.started_at is None or now - core.started_at >= timeout
    async with core.tx() as t:
        silent = await workers_q.silent_since(t.conn, now - timeout) if up_long_enough else []
        for row in silent:
            if await go_offline(core, t, row, f"no heartbeat for {s.heartbeat_timeout_s:g}s"):
                log.info("worker offline", worker_id=row["id"], reason="heartbeat timeout")
        dropped = core.hub.dropped_longer_than(s.stream_grace_s)
        for row in await workers_q.by_ids(t.conn, dropped):
            dropped_at, owner = dropped[row["id"]]
            # Its stream is now someone else's (it reconnected, here or at another
            # coordinator), or it was heard from since (a heartbeat): then it lives.
            heard = as_utc(row["last_heartbeat"])
            if row["stream_owner"] != owner or (heard is not None and heard > dropped_at):
                continue
            if await go_offline(core, t, row, "its event stream dropped"):
                log.info("worker offline", worker_id=row["id"], reason="stream dropped")
        for wid in dropped:
            core.hub.forget(wid)
        # Anything still holding a slot on a worker that is gone has lost its attempt.
        for job in await jobs_q.orphaned(t.conn):
            await end_attempt(core, t, job, AttemptOutcome.LOST, error="its worker is offline")
        for wid in await workers_q.expired_ephemeral(
            t.conn, now - timedelta(seconds=s.ephemeral_ttl_s)
        ):
            await workers_q.delete_offline(t.conn, wid)
        await streams.prune_events(t.conn, now - timedelta(seconds=max(s.ephemeral_ttl_s, 3600)))


async def run(core: Core) -> None:
    while True:
        try:
            await tick(core)
        except Exception:  # keep reaping after a bad tick (e.g. the database blinked)
            log.exception("reaper tick failed")
        await asyncio.sleep(core.settings.reaper_interval_s)
