"""The dispatcher: one loop per coordinator that turns the pure scheduler's plan into
attempts. It wakes when something changed (submit, a slot freed, a worker connected)
and polls once a second only as the fallback (and for retry backoffs coming due)."""

from __future__ import annotations

import asyncio
import zlib
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy.engine import RowMapping

from corral.model import JobState, decide
from corral.model.changes import Change, MoveJob
from corral.model.snapshot import JobSnap, WorkerLoad, WorkerSnap
from corral.protocol import CALL_KIND
from corral.scheduler import (
    Assignment,
    Budget,
    JobDemand,
    Victim,
    WorkerOffer,
    left_over,
    offer,
    plan,
    preemptions,
    room,
    still_fitting,
)
from corral.server import cause
from corral.server.config import ServerSettings
from corral.server.core import Core, Tx
from corral.store import as_utc, one_writer
from corral.store import jobs as jobs_q
from corral.store import workers as workers_q

log = structlog.get_logger("corral.dispatch")
# A round reads the queue a page at a time: the first as large as a few times the free
# slots (most queued jobs fit most workers), each next one four times larger up to BATCH,
# so a long queue costs a round what the free slots need, not a full page every time.
FIRST_PAGE_PER_SLOT = 2
BATCH = 500
MAX_ROWS = 10_000  # at most this many queued jobs looked at per round
# A connected worker's snapshot is kept between rounds and read again when its row changes
# here, or after this long: another coordinator's change (PostgreSQL) is seen within it,
# and until then the round's locked re-read of its chosen workers keeps the plan right.
SNAPSHOT_S = 10.0
GIB = 1024**3
GANG_PORTS = (29500, 1000)  # MASTER_PORT of a gang: the first port and how many there are
PREEMPT_LOOK = 50  # with no slot free anywhere, how much of the queue may stop others


class _GangRace(Exception):
    """A gang member's assignment missed (another coordinator moved it meanwhile)."""


class Dispatcher:
    def __init__(self, core: Core, poll_s: float = 1.0) -> None:
        self.core = core
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        # Reading every connected worker each round cost a round 40 ms at 2,000 workers
        # (docs/PERFORMANCE.md); their rows change rarely, and every change here says so.
        self._snaps: dict[str, tuple[float, WorkerSnap]] = {}  # id -> (read at, snapshot)
        self._changes = 0  # how many times workers_changed was told
        self._changed_at: dict[str, int] = {}  # worker id -> _changes when it last changed
        self._cleared_at = 0
        core.workers_changed = self.forget

    def forget(self, ids: Collection[str] | None) -> None:
        """These workers' rows changed (None: any worker's may have): read them again."""
        self._changes += 1
        if ids is None:
            self._snaps.clear()
            self._changed_at.clear()
            self._cleared_at = self._changes
            return
        for worker_id in ids:
            self._snaps.pop(worker_id, None)
            self._changed_at[worker_id] = self._changes

    def kick(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                placed = await self.round()
            except Exception:  # the loop must outlive a bad round (e.g. a dropped DB link)
                log.exception("dispatch round failed")
                placed = 0
                await asyncio.sleep(self.poll_s)
            if placed:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_s)
            except TimeoutError:
                pass

    async def round(self) -> int:
        """Place what fits now; returns how many attempts were handed out."""
        connected = self.core.hub.connected()
        if not connected:
            return 0
        with cause.bound(cause.new("round")):
            try:
                async with self.core.tx("dispatcher") as t:
                    placed = await self._round(t, connected)
            except _GangRace:  # another coordinator took a member meanwhile: next round
                log.info("round rolled back: a gang member moved meanwhile")
                return 0
            if (done := self.core.hooks.get("round.done")) is not None:
                await done(placed=placed)
        return placed

    async def _round(self, t: Tx, connected: Collection[str]) -> int:
        # Nothing ready, nothing to read: a fleet of thousands registering or freeing slots
        # with an empty queue costs one index probe a round, not a read of every worker.
        if not await jobs_q.any_ready(t.conn, t.now):
            return 0
        # Free slots (or prefetch room) next: with none, the queue is not read at all, unless
        # a worker runs attempts a higher priority may stop.
        inactive, quotas = await workers_q.tenant_limits(t.conn)
        workers = await self._snapshots(t, connected, inactive)
        if not workers:
            return 0
        load = await jobs_q.load_by_worker(t.conn)
        offers = _offers(workers.values(), load)
        stoppable = any(load[w].preemptible for w in workers if w in load)
        if not offers and not stoppable:
            return 0
        budget = await _budget(t, offers, workers.values(), quotas, self.core.settings)
        chosen, demands, unplaced = await _plan(t, offers, t.now, budget, inactive) if offers else (
            [], {}, [])  # fmt: skip
        placed = await self._assign(t, offers, chosen, demands, workers) if chosen else 0
        if stoppable:
            # The top of the queue of every tenant whose jobs these workers could run: the
            # round's pages read only the tenants with free room, or none.
            shared = any(w.shared for w in workers.values())
            tenants = None if shared else {w.tenant_id for w in workers.values()}
            top = await jobs_q.ready(t.conn, t.now, PREEMPT_LOOK, tenants=tenants,
                                     excluded=inactive)  # fmt: skip
            placed_ids = {a.job_id for a in chosen}
            looked = {d.id for d in unplaced}
            unplaced += [demand(r, t.now) for r in top
                         if r["id"] not in looked and r["id"] not in placed_ids]  # fmt: skip
            await _preempt(t, unplaced, workers, load, budget)
        return placed

    async def _assign(
        self, t: Tx, offers: list[WorkerOffer], chosen: list[Assignment],
        demands: Mapping[str, JobDemand], workers: dict[str, WorkerSnap],
    ) -> int:  # fmt: skip
        await t.at("round.planned", offers=offers, chosen=chosen)
        # The offers were read without locks. A drain, a loss, or another coordinator's round
        # (a worker whose old stream there is not yet seen as gone) may have committed since:
        # lock the chosen workers, read them again, keep what still fits.
        if not one_writer(t.conn):
            locked = await workers_q.lock_dispatchable(t.conn, {a.worker_id for a in chosen})
            workers = {r["id"]: WorkerSnap.of(r) for r in locked}
            fresh = _offers(workers.values(), await jobs_q.load_by_worker(t.conn, workers))
            chosen = still_fitting(chosen, demands, fresh)
        jobs = {
            r["id"]: JobSnap.of(r) for r in await jobs_q.by_ids(t.conn, [a.job_id for a in chosen])
        }
        masters = {
            demands[a.job_id].gang_id: a.worker_id
            for a in chosen
            if demands[a.job_id].gang_id is not None and demands[a.job_id].rank == 0
        }
        moves = []
        for a in chosen:
            job, gang = jobs[a.job_id], demands[a.job_id].gang_id
            meet = (rendezvous(gang, job.attempt + 1, workers.get(masters[gang]))
                    if gang is not None else None)  # fmt: skip
            moves.append(decide.assign(job, a.worker_id, t.now, a.gpu_ids, meet))
        missed = {m.job_id for m in await t.apply(moves) if isinstance(m, MoveJob)}
        if any(demands[j].gang_id is not None for j in missed):
            raise _GangRace  # half a gang must not run: the whole round is rolled back
        placed = [a for a in chosen if a.job_id not in missed]
        given = Counter(a.worker_id for a in placed)
        counted: list[Change] = []
        for worker_id, n in given.items():
            counted += decide.taken(workers[worker_id], n)
        await t.apply(counted)
        if placed:
            log.debug("placed", attempts=len(placed))
        return len(placed)

    async def _snapshots(
        self, t: Tx, connected: Collection[str], inactive: Collection[str]
    ) -> dict[str, WorkerSnap]:
        """The connected workers of active tenants: kept snapshots (of tenants still
        active), and a read of those without one (new, changed, or kept longer than
        ``SNAPSHOT_S``)."""
        now = self.core.monotonic()
        out: dict[str, WorkerSnap] = {}
        stale: list[str] = []
        for worker_id in connected:
            kept = self._snaps.get(worker_id)
            if kept is not None and now - kept[0] < SNAPSHOT_S:
                out[worker_id] = kept[1]
            else:
                stale.append(worker_id)
        # A tenant's status is read every round, not kept: a suspension committed by another
        # coordinator, or written as a race would leave it, stops its workers at once.
        if inactive:
            out = {w: snap for w, snap in out.items() if snap.tenant_id not in inactive}
        if not stale:
            return out
        mark = self._changes
        for r in await workers_q.of_active_tenants(t.conn, stale):
            snap = WorkerSnap.of(r)
            out[snap.id] = snap
            # Kept only if no change was told since the read began: one told meanwhile may
            # have committed after the read (PostgreSQL), so the next round reads it again.
            if self._cleared_at <= mark and self._changed_at.get(snap.id, -1) <= mark:
                self._snaps[snap.id] = (now, snap)
        # Those whose stream is gone are read afresh when they are back. (What was told of
        # them can go too: the next read's mark is later than all of it.)
        for worker_id in set(self._snaps).difference(connected):
            del self._snaps[worker_id]
        for worker_id in set(self._changed_at).difference(connected):
            del self._changed_at[worker_id]
        return out


def _offers(workers: Iterable[WorkerSnap], load: Mapping[str, WorkerLoad]) -> list[WorkerOffer]:
    """What each of these workers can take now."""
    return [o for w in workers if (o := offer(w, load.get(w.id))) is not None]


async def _preempt(
    t: Tx, waiting: Sequence[JobDemand], workers: Mapping[str, WorkerSnap],
    load: Mapping[str, WorkerLoad], budget: Budget,
) -> None:  # fmt: skip
    """Stop the preemptible attempts that jobs of a higher priority that fit nowhere need
    (``scheduler.preemptions``); they are queued again once they have stopped."""
    waiting = [j for j in waiting if not j.queueable and budget.allows(j)]
    held = [w for w, n in load.items() if n.preemptible and w in workers]
    if not waiting or not held:
        return
    rows = await jobs_q.victims(t.conn, held)
    if not rows or not any(j.priority > min(r["priority"] for r in rows) for j in waiting):
        return
    rooms = {w.id: room(w, load.get(w.id)) for w in workers.values() if offer(w) is not None}
    found = [Victim(r["id"], r["worker_id"], r["priority"], tuple(r["gpu_ids"] or ()),
                    r["cpus"] or 0.0, int((r["memory_gb"] or 0) * GIB),
                    r["state"] == JobState.PREEMPTING.value,
                    (t.now - created).total_seconds() if (created := as_utc(r["created_at"]))
                    else 0.0) for r in rows]  # fmt: skip
    pairs = preemptions(waiting, rooms, budget.capacity, found)
    if not pairs:
        return
    snaps = {r["id"]: JobSnap.of(r) for r in await jobs_q.by_ids(t.conn, [v for v, _ in pairs])}
    await t.apply([c for victim, by in pairs if victim in snaps
                   for c in decide.preempt(snaps[victim], by)])  # fmt: skip
    log.info("preempting", attempts=len(pairs))


async def _budget(
    t: Tx, offers: Sequence[WorkerOffer], workers: Iterable[WorkerSnap],
    quotas: Mapping[str, tuple[int | None, int | None]], settings: ServerSettings,
) -> Budget:  # fmt: skip
    """The round's quotas left (read only for tenants that have quotas) and what each
    worker has when empty, for the jobs that have waited too long."""
    ws = list(workers)
    budget = Budget(workers=ws, reserve_after_s=settings.reserve_after_s)
    shared = any(w.shared for w in ws)
    # Of every worker, not only those with room: a quota holds for what preemption frees too.
    capped = set(quotas) if shared else {w.tenant_id for w in ws} & set(quotas)
    if shared:  # the tenants share these workers: fair share by what each runs
        used = await jobs_q.usage_by_tenant(t.conn, None)
        budget.running = {tenant: jobs for tenant, (jobs, _) in used.items()}
    elif capped:
        used = await jobs_q.usage_by_tenant(t.conn, capped)
    if capped:
        for tenant in capped:
            jobs, gpus = used.get(tenant, (0, 0))
            max_jobs, max_gpus = quotas[tenant]
            if max_jobs is not None:
                budget.jobs_left[tenant] = max_jobs - jobs
            if max_gpus is not None:
                budget.gpus_left[tenant] = max_gpus - gpus
    return budget


async def _plan(
    t: Tx, offers: list[WorkerOffer], now: datetime, budget: Budget, inactive: Collection[str]
) -> tuple[list[Assignment], dict[str, JobDemand], list[JobDemand]]:
    """Page through the queue until the free slots are filled or the queue ends, so
    jobs that fit no worker never hide those behind them. A shared worker takes any active
    tenant's jobs."""
    tenants = None if any(o.shared for o in offers) else {o.tenant_id for o in offers}
    chosen: list[Assignment] = []
    demands: dict[str, JobDemand] = {}
    after: RowMapping | None = None
    size = min(BATCH, FIRST_PAGE_PER_SLOT * sum(max(o.free_slots, 0) + o.prefetch
                                                for o in offers))  # fmt: skip
    looked = 0
    seen: set[str] = set()  # gangs looked at
    unplaced: list[JobDemand] = []  # in claim order
    while looked < MAX_ROWS:
        # With every slot taken, only jobs that may wait on a busy worker can be placed: the
        # queue's other jobs are not read (a backlog of commands would be, every round).
        waiting = None if any(o.free_slots > 0 for o in offers) else CALL_KIND
        page: Sequence[RowMapping] = await jobs_q.ready(
            t.conn, now, size, tenants=tenants, excluded=inactive, after=after,
            waiting_kind=waiting,
        )  # fmt: skip
        looked += len(page)
        if not page:
            break
        batch = {r["id"]: demand(r, now) for r in page}
        # A gang's members are placed together: those the page cut off are read too, and a
        # gang is looked at once a round.
        gangs = {d.gang_id for d in batch.values() if d.gang_id is not None}
        batch = {k: d for k, d in batch.items() if d.gang_id not in seen}
        if cut := {g for g in gangs - seen
                   if sum(d.gang_id == g for d in batch.values()) < _nodes(batch, g)}:  # fmt: skip
            for r in await jobs_q.ready(t.conn, now, MAX_ROWS, tenants=tenants,
                                        excluded=inactive, gangs=cut):  # fmt: skip
                batch.setdefault(r["id"], demand(r, now))
        seen |= gangs
        placed = plan(list(batch.values()), offers, budget)
        chosen += placed
        demands.update((a.job_id, batch[a.job_id]) for a in placed)
        taken_now = {a.job_id for a in placed}
        unplaced += [d for d in batch.values() if d.id not in taken_now]
        offers = left_over(offers, placed, batch)
        # Done when nothing has room, or all that has is held for a job already seen.
        if not offers or len(page) < size or all(o.id in budget.reserved for o in offers):
            break
        after, size = page[-1], min(BATCH, size * 4)
    return chosen, demands, unplaced


def _nodes(batch: Mapping[str, JobDemand], gang: str) -> int:
    return next(d.nodes for d in batch.values() if d.gang_id == gang)


def rendezvous(gang_id: str, attempt: int, master: WorkerSnap | None) -> dict[str, Any]:
    """Where a gang's members meet: rank 0's worker, at a port of ``GANG_PORTS`` that
    follows from the gang and its attempt (rank 0's worker checks it is free before it
    starts, and declines the assignment if not: the next attempt has another)."""
    first, size = GANG_PORTS
    port = first + (zlib.crc32(gang_id.encode()) + 7919 * attempt) % size
    return {"master_addr": (master.address if master else None) or "127.0.0.1",
            "master_port": port}  # fmt: skip


def demand(row: RowMapping, now: datetime | None = None) -> JobDemand:
    """What a queued job (a row of ``jobs_q.ready``) asks of its worker."""
    more = row["requires"] or {}
    created = as_utc(row["created_at"])
    return JobDemand(
        id=row["id"], tenant_id=row["tenant_id"], priority=row["priority"], gpus=row["gpus"],
        worker_labels=row["worker_labels"], queueable=row["kind"] == CALL_KIND and not row["gpus"],
        tags=tuple(more.get("tags", ())), accelerator=more.get("accelerator"),
        target=more.get("target", "auto"),
        gpu_name=more.get("gpu_name"),
        gpu_memory_bytes=int((more.get("gpu_memory_gb") or 0) * GIB),
        cpus=row["cpus"] or 0.0, memory_bytes=int((row["memory_gb"] or 0) * GIB),
        waited_s=(now - created).total_seconds() if now is not None and created else 0.0,
        gang_id=row["gang_id"], nodes=row["nodes"] or 1, rank=row["rank"] or 0,
    )  # fmt: skip
