"""The reaper: on a timer, finds what went quiet and puts it back on a consistent path.
Idempotent: every move it makes is a guarded UPDATE, so two ticks never double-count."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog
from sqlalchemy.engine import RowMapping

from corral.model import decide
from corral.model.changes import Change
from corral.model.history import Reason
from corral.model.snapshot import JobSnap, WorkerSnap
from corral.server import cause
from corral.server.core import Core, Tx
from corral.store import as_utc, streams
from corral.store import history as history_q
from corral.store import jobs as jobs_q
from corral.store import workers as workers_q

log = structlog.get_logger("corral.reaper")


def resumed_after(core: Core, since: float | None = None) -> float | None:
    """How long this coordinator could not act, if that was long enough to matter.

    Ticks come every ``reaper_interval_s``; a much longer gap since the last one that
    completed (or, ``since``, since this one began) means the process was frozen (SIGSTOP, a
    stalled VM) or its database was out of reach. Workers were not heard meanwhile through
    no fault of theirs, so their silence counts again from now, as after a restart."""
    now, last = core.monotonic(), core.acted_at if since is None else since
    if last is None:
        return None
    gap = now - last
    # Longer than a tick ever takes, short enough that a stretch just under it plus a beat
    # stays inside the heartbeat timeout (the settings are checked to allow both).
    s = core.settings
    return gap if gap > s.reaper_interval_s + s.heartbeat_timeout_s / 4 else None


def _resumed(core: Core, gap: float) -> None:
    core.listening_since = core.clock.now()
    log.warning("coordinator.resumed", could_not_act_s=round(gap, 1),
                hint="workers get a whole timeout before they are reaped")  # fmt: skip


async def tick(core: Core) -> None:
    s = core.settings
    began = core.monotonic()
    dropped = core.hub.dropped_longer_than(s.stream_grace_s)
    with cause.bound(cause.new("tick")):
        if (gap := resumed_after(core)) is not None:
            _resumed(core, gap)
        async with core.tx("reaper") as t:
            await _silent(core, t)
            waiting = await _dropped(core, t, dropped)
            # Anything still holding a slot on a worker that is gone has lost its attempt.
            lost: list[Change] = []
            for row in await jobs_q.orphaned(t.conn):
                removed = not row["worker_exists"]
                lost += decide.lose(
                    [JobSnap.of(row)],
                    Reason.WORKER_REMOVED if removed else Reason.WORKER_OFFLINE,
                    "its worker was removed" if removed else "its worker is offline",
                    now=t.now, policy=t.policy,
                )  # fmt: skip
            await t.apply(lost)
            cutoff = t.now - timedelta(seconds=s.ephemeral_ttl_s)
            expired = await workers_q.expired_ephemeral(t.conn, cutoff)
            for w in await workers_q.by_ids(t.conn, expired):
                await t.apply(decide.remove_worker(WorkerSnap.of(w), actor=None,
                                                   reason=Reason.EXPIRED))  # fmt: skip
            await streams.prune_events(
                t.conn, t.now - timedelta(seconds=max(s.ephemeral_ttl_s, 3600))
            )
            await workers_q.prune_nonces(t.conn, t.now)
            await history_q.prune(t.conn, t.now - timedelta(days=s.events_retention_days))
        # Frozen in the middle of this tick (its clock read before): the heartbeats that
        # waited meanwhile are still being taken, and the next tick must not count them late.
        if (gap := resumed_after(core, since=began)) is not None:
            _resumed(core, gap)
    core.acted_at = core.monotonic()
    for wid in dropped.keys() - waiting:
        core.hub.forget(wid)
    if core.tokens.due():  # a coordinator that runs for weeks rotates and prunes too
        await core.tokens.refresh(core.store.tx)


async def _silent(core: Core, t: Tx) -> None:
    timeout = timedelta(seconds=t.policy.heartbeat_timeout_s)
    # Silence while this coordinator could not listen (down, frozen, its database out of
    # reach) is not the worker's: after such a stretch every worker gets a whole timeout.
    if core.listening_since is not None and t.now - core.listening_since < timeout:
        return
    message = f"no heartbeat for {t.policy.heartbeat_timeout_s:g}s"
    for row in await workers_q.silent_since(t.conn, t.now - timeout):
        await _offline(t, row, Reason.HEARTBEAT_TIMEOUT, message)


async def _dropped(core: Core, t: Tx, dropped: dict[str, tuple[datetime, str]]) -> set[str]:
    """Take offline the workers whose stream dropped longer than the grace ago; returns
    those whose grace is not over yet, counted from when this coordinator could act again."""
    grace = timedelta(seconds=core.settings.stream_grace_s)
    waiting: set[str] = set()
    for row in await workers_q.by_ids(t.conn, dropped):
        dropped_at, owner = dropped[row["id"]]
        # Its stream is now someone else's (it reconnected, here or at another coordinator),
        # or it was heard from since (a heartbeat): then it lives.
        heard = as_utc(row["last_heartbeat"])
        if row["stream_owner"] != owner or (heard is not None and heard > dropped_at):
            continue
        # A stream that dropped while this coordinator could not act (frozen, its database
        # out of reach: the worker's reconnects were refused) gets its grace from then on.
        since = max(dropped_at, core.listening_since or dropped_at)
        if t.now - since < grace:
            waiting.add(row["id"])
            continue
        await _offline(t, row, Reason.STREAM_DROPPED, "its event stream dropped")
    return waiting


async def _offline(t: Tx, row: RowMapping, reason: Reason, message: str) -> None:
    worker = WorkerSnap.of(row)
    await workers_q.lock(t.conn, worker.id)
    active = [JobSnap.of(r) for r in await jobs_q.active_on(t.conn, worker.id)]
    await t.apply(decide.go_offline(worker, active, reason, message, now=t.now, policy=t.policy))


async def run(core: Core) -> None:
    while True:
        try:
            await tick(core)
        except Exception:  # keep reaping after a bad tick (e.g. the database blinked)
            log.exception("reaper tick failed")
        await asyncio.sleep(core.settings.reaper_interval_s)
