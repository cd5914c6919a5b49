"""The dispatcher: one loop per coordinator that turns the pure scheduler's plan into
attempts. It wakes when something changed (submit, a slot freed, a worker connected)
and polls once a second only as the fallback (and for retry backoffs coming due)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import structlog

from corral.model import JobState, WorkerStatus, WorkerType
from corral.protocol import JobAssign
from corral.scheduler import Assignment, JobDemand, WorkerOffer, plan
from corral.server.core import Core
from corral.server.fleet import dispatchable
from corral.store import jobs as jobs_q
from corral.store import one_writer, streams
from corral.store import workers as workers_q

log = structlog.get_logger("corral.dispatch")
BATCH = 500
MAX_PAGES = 20  # at most 10,000 queued jobs looked at per round


class Dispatcher:
    def __init__(self, core: Core, poll_s: float = 1.0) -> None:
        self.core = core
        self.poll_s = poll_s
        self._wake = asyncio.Event()

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
        core = self.core
        connected = core.hub.connected()
        if not connected:
            return 0
        now = core.clock.now()
        async with core.tx() as t:
            # Free slots first: with none, the queue is not read at all.
            offers = await _offers(t, connected)
            if not offers:
                return 0
            chosen = await self._plan(t, offers, now)
            if not chosen:
                return 0
            # The offers were read without locks. A drain, a loss, or another coordinator's
            # round (a worker whose old stream there is not yet seen as gone) may have
            # committed since: lock the chosen workers, read them again, keep what still fits.
            by_id = {r["id"]: r for r in await jobs_q.by_ids(t.conn, [a.job_id for a in chosen])}
            if not one_writer(t.conn):
                locked = await workers_q.lock_dispatchable(t.conn, {a.worker_id for a in chosen})
                chosen = _still_fitting(chosen, await _offers(t, locked), by_id)
            placed = 0
            taken: dict[str, int] = {}
            for a in chosen:
                job = by_id[a.job_id]
                if await self._assign(t, job, a.worker_id, now):
                    placed += 1
                    taken[a.worker_id] = taken.get(a.worker_id, 0) + 1
            for worker_id, n in taken.items():
                await workers_q.bump_taken(t.conn, worker_id, n)
                await workers_q.set_status(t.conn, worker_id, WorkerStatus.IDLE,
                                           WorkerStatus.BUSY)  # fmt: skip
        if placed:
            log.debug("placed", attempts=placed)
        return placed

    async def _plan(self, t: Any, offers: list[WorkerOffer], now: Any) -> list[Assignment]:
        """Page through the queue until the free slots are filled or the queue ends, so
        jobs that fit no worker never hide those behind them."""
        tenants = {o.tenant_id for o in offers}
        chosen: list[Assignment] = []
        after = None
        for _ in range(MAX_PAGES):
            page = await jobs_q.ready(t.conn, now, BATCH, tenants=tenants, after=after)
            if not page:
                break
            demands = [JobDemand(id=r["id"], tenant_id=r["tenant_id"], priority=r["priority"],
                                 gpus=r["gpus"], worker_labels=r["worker_labels"])
                       for r in page]  # fmt: skip
            placed = plan(demands, offers)
            chosen += placed
            offers = _left_over(offers, placed, {d.id: d for d in demands})
            if not offers or len(page) < BATCH:
                break
            after = page[-1]
        return chosen

    async def _assign(self, t: Any, job: Any, worker_id: str, now: Any) -> bool:
        attempt = job["attempt"] + 1
        moved = await jobs_q.transition(
            t.conn, job["id"], JobState.QUEUED, JobState.ASSIGNED, expected_attempt=job["attempt"],
            attempt=attempt, worker_id=worker_id, not_before=None,
        )  # fmt: skip
        if not moved:
            return False
        await jobs_q.insert_attempt(t.conn, {"job_id": job["id"], "number": attempt,
                                             "tenant_id": job["tenant_id"], "worker_id": worker_id,
                                             "assigned_at": now})  # fmt: skip
        event = JobAssign(job_id=job["id"], attempt=attempt, name=job["name"], kind=job["kind"],
                          command=job["command"], env=job["env"], timeout_s=job["timeout_s"],
                          gpus=job["gpus"])  # fmt: skip
        await streams.push_event(t.conn, worker_id=worker_id, tenant_id=job["tenant_id"],
                                 data=event.model_dump(), now=now)  # fmt: skip
        t.workers.add(worker_id)
        t.jobs.add(job["id"])
        return True


async def _offers(t: Any, worker_ids: set[str]) -> list[WorkerOffer]:
    """What each of these workers can take now (only IDLE/BUSY ones with a free slot)."""
    offers = []
    for row, held, gpus_held in await dispatchable(t, worker_ids):
        free = row["slots"] - held
        if row["worker_type"] == WorkerType.EPHEMERAL:
            free = min(free, 1 - row["taken_since_register"])
        if free > 0:
            offers.append(WorkerOffer(id=row["id"], tenant_id=row["tenant_id"],
                                      labels=row["labels"], free_slots=free,
                                      free_gpus=len(row["gpus"]) - gpus_held))  # fmt: skip
    return offers


def _still_fitting(
    chosen: list[Assignment], offers: list[WorkerOffer], jobs: dict[str, Any]
) -> list[Assignment]:
    """The assignments, in order, that the workers' fresh offers still hold."""
    room = {o.id: [o.free_slots, o.free_gpus] for o in offers}
    kept = []
    for a in chosen:
        r, gpus = room.get(a.worker_id), jobs[a.job_id]["gpus"]
        if r is not None and r[0] > 0 and r[1] >= gpus:  # as scheduler.plan counts
            r[0] -= 1
            r[1] -= gpus
            kept.append(a)
    return kept


def _left_over(
    offers: list[WorkerOffer], placed: list[Assignment], demands: dict[str, JobDemand]
) -> list[WorkerOffer]:
    """What the offers still have once ``placed`` is taken from them."""
    used: dict[str, tuple[int, int]] = {}
    for a in placed:
        n, g = used.get(a.worker_id, (0, 0))
        used[a.worker_id] = (n + 1, g + demands[a.job_id].gpus)
    left = []
    for o in offers:
        n, g = used.get(o.id, (0, 0))
        if o.free_slots - n > 0:
            left.append(replace(o, free_slots=o.free_slots - n, free_gpus=o.free_gpus - g))
    return left
