"""Many jobs in one request: submitted in one transaction, and waited for together."""

from __future__ import annotations

import asyncio

from sqlalchemy.exc import IntegrityError

from corral.model import TERMINAL_JOB_STATES, Conflict, IdempotencyKeyReused, NotFound, decide
from corral.model.changes import Change
from corral.protocol import BatchJob, BatchResult, WaitResult
from corral.server import hub
from corral.server.auth import Identity, new_id
from corral.server.core import Core
from corral.server.jobs import have_workdirs, members, request_hash, stored, view
from corral.store import jobs as jobs_q

__all__ = ["submit_many", "wait_many"]

_RETRIES = 3  # a concurrent submit under one of the batch's keys: read the keys again
_FALLBACK_S = 5.0  # a wake-up lost (another coordinator ended the job): read again anyway
_GATHER_S = 0.05  # after the first of them ended: how long to wait for more
_ENDED = [s.value for s in TERMINAL_JOB_STATES]


def _reused(i: int, other: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"jobs[{i}].idempotency_key was used for {other} with a different request",
        field=f"jobs[{i}].idempotency_key",
    )


def _first_of_each_key(items: list[BatchJob], digests: list[str]) -> dict[str, int]:
    """key -> index of its first item; a key twice in a batch must name one request."""
    first: dict[str, int] = {}
    for i, (item, digest) in enumerate(zip(items, digests, strict=True)):
        key = item.idempotency_key
        if key is None:
            continue
        if key not in first:
            first[key] = i
        elif digests[first[key]] != digest:
            raise _reused(i, f"jobs[{first[key]}]")
    return first


async def submit_many(core: Core, who: Identity, items: list[BatchJob]) -> BatchResult:
    """Queue every job of ``items`` in one transaction (all or none), each through
    ``decide.submit``; an item whose idempotency key was seen before returns that job."""
    digests = [request_hash(item) for item in items]
    first = _first_of_each_key(items, digests)
    await have_workdirs(core, who.tenant_id, items)
    for _ in range(_RETRIES):
        try:
            async with core.tx(who.key_id) as t:
                old = (
                    await jobs_q.by_idempotency_keys(t.conn, who.tenant_id, first) if first else {}
                )
                ids: list[str] = []
                created: list[bool] = []
                changes: list[Change] = []
                made: dict[str, str] = {}  # key -> the job this batch creates under it
                for i, (item, digest) in enumerate(zip(items, digests, strict=True)):
                    key = item.idempotency_key
                    if key is not None and key in old:
                        if old[key]["request_hash"] not in (None, digest):
                            raise _reused(i, f"job {old[key]['id']}")
                        ids.append(old[key]["id"])
                        created.append(False)
                    elif key is not None and key in made:
                        ids.append(made[key])
                        created.append(False)
                    else:
                        job_id = new_id("job")
                        if key is not None:
                            made[key] = job_id
                        values = stored(item, job_id, who.tenant_id, key, digest, t.now)
                        for v in members(values):
                            changes += decide.submit(v, actor=who.key_id)
                        ids.append(job_id)
                        created.append(True)
                await t.apply(changes)
                rows = await jobs_q.of_tenant(t.conn, who.tenant_id, set(ids))
                return BatchResult(jobs=[view(rows[j]) for j in ids], created=created)
        except IntegrityError:
            if not first:
                raise
    raise Conflict("jobs: their idempotency keys are being used by other requests; try again")


async def wait_many(core: Core, tenant_id: str, ids: list[str], timeout_s: float) -> WaitResult:
    """Those of ``ids`` that have ended, once at least one has, or all still pending after
    ``timeout_s``. Woken by the jobs' own signals, not by polling; after the first read,
    only the jobs whose signal fired are read again."""
    wanted = list(dict.fromkeys(ids))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    with core.hub.jobs.watching(wanted) as signals:  # before reading, as everywhere
        # Their states only: a map waits on a thousand jobs at a time; whole rows are read
        # only of those that have ended (an ended job does not change again).
        async with core.tx() as t:  # every job once, to know they exist
            states = await jobs_q.states_of(t.conn, tenant_id, wanted)
            for j in wanted:
                if j not in states:
                    raise NotFound(f"no job {j}", field="ids")
            done = [j for j, state in states.items() if state in TERMINAL_JOB_STATES]
            rows = dict(await jobs_q.of_tenant(t.conn, tenant_id, done)) if done else {}
        pending = set(wanted) - rows.keys()
        gathered = False
        while pending and not gathered and (left := deadline - loop.time()) > 0:
            if rows:
                # Others are about to end too (a map's tasks end together): one answer for
                # them all a moment later, rather than a request each.
                await asyncio.sleep(min(_GATHER_S, left))
                gathered = True
            else:
                await hub.wait(signals.event, min(left, _FALLBACK_S))
            if signals.event.is_set() or gathered:
                again = pending & signals.take()
            else:  # no signal: one may have been lost to another coordinator's commit
                again = pending
            if again:
                async with core.tx() as t:
                    ended = await jobs_q.of_tenant(t.conn, tenant_id, again, _ENDED)
                rows.update(ended)
                pending -= ended.keys()
    ended_rows = [view(rows[j]) for j in wanted if j in rows]
    return WaitResult(jobs=ended_rows, pending=[j for j in wanted if j not in rows])
