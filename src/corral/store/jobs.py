"""Job and attempt queries. Every state change is a guarded UPDATE … WHERE state = :expected."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, func, or_, select, true, tuple_, update
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncConnection

from corral.model import (
    ACTIVE_JOB_STATES,
    JobState,
    WorkerStatus,
    check_job_transition,
)
from corral.model.snapshot import WorkerLoad
from corral.store._dialect import one_writer
from corral.store.tables import attempts, jobs, workers

_ACTIVE = [s.value for s in ACTIVE_JOB_STATES]


async def insert(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    """One statement for many jobs; each row names the same columns."""
    await conn.execute(jobs.insert(), [dict(r) for r in rows])


async def get(
    conn: AsyncConnection, tenant_id: str, job_id: str, *, for_update: bool = False
) -> RowMapping | None:
    """``for_update`` locks the row until commit (PostgreSQL; SQLite has one writer)."""
    q = select(jobs).where(jobs.c.id == job_id, jobs.c.tenant_id == tenant_id)
    if for_update:
        q = q.with_for_update(key_share=True)  # FOR NO KEY UPDATE: FK inserts still pass
    return (await conn.execute(q)).mappings().first()


async def by_idempotency_key(conn: AsyncConnection, tenant_id: str, key: str) -> RowMapping | None:
    q = select(jobs).where(jobs.c.tenant_id == tenant_id, jobs.c.idempotency_key == key)
    return (await conn.execute(q)).mappings().first()


async def page(
    conn: AsyncConnection,
    tenant_id: str,
    *,
    states: Collection[str] = (),
    worker_id: str | None = None,
    limit: int = 100,
    before: tuple[datetime, str] | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Sequence[RowMapping]:
    """Newest first; ``before`` is the (created_at, id) of the last row of the previous page.
    ``name``: a part of the job's name; ``labels``: what it asked of its worker's labels."""
    q = select(jobs).where(jobs.c.tenant_id == tenant_id)
    if states:
        q = q.where(jobs.c.state.in_(list(states)))
    if worker_id:
        q = q.where(jobs.c.worker_id == worker_id)
    if name:
        escaped = name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(jobs.c.name.like(f"%{escaped}%", escape="\\"))
    for key, value in (labels or {}).items():
        q = q.where(jobs.c.worker_labels[key].as_string() == value)
    if before:
        at, jid = before
        q = q.where(or_(jobs.c.created_at < at, and_(jobs.c.created_at == at, jobs.c.id < jid)))
    q = q.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit)
    return (await conn.execute(q)).mappings().all()


async def transition(
    conn: AsyncConnection,
    job_id: str,
    expected: JobState,
    to: JobState,
    *,
    expected_attempt: int | None = None,
    **values: Any,
) -> bool:
    """Move one job from ``expected`` to ``to``; False when someone else moved it first."""
    check_job_transition(expected, to)
    q = update(jobs).where(jobs.c.id == job_id, jobs.c.state == expected.value)
    if expected_attempt is not None:
        q = q.where(jobs.c.attempt == expected_attempt)
    res = await conn.execute(q.values(state=to.value, **values))
    return res.rowcount == 1


async def movable(
    conn: AsyncConnection, frm: JobState, refs: Collection[tuple[str, int]]
) -> set[str]:
    """Of the jobs named by (id, attempt), those in ``frm`` at that attempt, locked until
    commit in id order (PostgreSQL; SQLite has one writer): ``transition_many`` moves them."""
    q = (
        select(jobs.c.id)
        .where(tuple_(jobs.c.id, jobs.c.attempt).in_(list(refs)), jobs.c.state == frm.value)
        .order_by(jobs.c.id)
    )
    if not one_writer(conn):
        q = q.with_for_update(key_share=True)
    return set((await conn.execute(q)).scalars())


def _binds(table: Any, keys: Collection[str]) -> dict[str, Any]:
    return {k: bindparam(f"v_{k}", type_=table.c[k].type) for k in keys}


async def transition_many(
    conn: AsyncConnection, frm: JobState, to: JobState, keys: Sequence[str],
    moves: Sequence[tuple[str, Mapping[str, Any]]],
) -> int:  # fmt: skip
    """Move each of ``moves`` (job id, values of ``keys``) from ``frm`` to ``to`` in one
    statement; the jobs were found ``movable``. Returns how many moved."""
    check_job_transition(frm, to)
    q = update(jobs).where(jobs.c.id == bindparam("k_id"), jobs.c.state == frm.value)
    q = q.values(state=to.value, **_binds(jobs, keys))
    rows = [{"k_id": job_id, **{f"v_{k}": values[k] for k in keys}} for job_id, values in moves]
    return int((await conn.execute(q, rows)).rowcount)


async def any_ready(conn: AsyncConnection, now: datetime) -> bool:
    """Is any job queued with its backoff passed? One index probe (``ix_jobs_queue``)."""
    q = select(jobs.c.id).where(
        jobs.c.state == JobState.QUEUED.value,
        or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now),
    )
    return (await conn.execute(q.limit(1))).first() is not None


async def ready(
    conn: AsyncConnection,
    now: datetime,
    limit: int,
    *,
    tenants: Collection[str] | None,
    excluded: Collection[str] = (),
    after: RowMapping | None = None,
    waiting_kind: str | None = None,
    gangs: Collection[str] | None = None,
) -> Sequence[RowMapping]:
    """Queued jobs of ``tenants`` (None: of every tenant but the ``excluded``) whose backoff
    has passed, in claim order (priority, then age); ``after`` is the last row of the
    previous page. ``waiting_kind``: only jobs of
    that kind asking no GPU (what a busy worker may hold waiting for a slot)."""
    q = select(
        jobs.c.id, jobs.c.tenant_id, jobs.c.priority, jobs.c.created_at, jobs.c.gpus,
        jobs.c.worker_labels, jobs.c.kind, jobs.c.cpus, jobs.c.memory_gb, jobs.c.requires,
        jobs.c.gang_id, jobs.c.nodes, jobs.c.rank,
    ).where(
        jobs.c.state == JobState.QUEUED.value,
        jobs.c.tenant_id.in_(list(tenants)) if tenants is not None
        else jobs.c.tenant_id.not_in(list(excluded)),
        or_(jobs.c.not_before.is_(None), jobs.c.not_before <= now),
    )  # fmt: skip
    if waiting_kind is not None:
        q = q.where(jobs.c.kind == waiting_kind, jobs.c.gpus == 0)
    if gangs is not None:  # these gangs' members, wherever they are in the queue
        q = q.where(jobs.c.gang_id.in_(list(gangs)))
    if after is not None:
        p, c, i = after["priority"], after["created_at"], after["id"]
        q = q.where(
            or_(
                jobs.c.priority < p,
                and_(jobs.c.priority == p,
                     or_(jobs.c.created_at > c, and_(jobs.c.created_at == c, jobs.c.id > i))),
            )
        )  # fmt: skip
    q = q.order_by(jobs.c.priority.desc(), jobs.c.created_at, jobs.c.id).limit(limit)
    return (await conn.execute(q)).mappings().all()


async def queued_ahead(conn: AsyncConnection, job: RowMapping) -> int:
    """How many of its tenant's queued jobs come before ``job`` in claim order."""
    p, c = job["priority"], job["created_at"]
    q = select(func.count()).where(
        jobs.c.tenant_id == job["tenant_id"], jobs.c.state == JobState.QUEUED.value,
        or_(jobs.c.priority > p, and_(jobs.c.priority == p, jobs.c.created_at < c)),
    )  # fmt: skip
    return int((await conn.execute(q)).scalar_one())


async def by_ids(conn: AsyncConnection, ids: Sequence[str]) -> Sequence[RowMapping]:
    if not ids:
        return []
    return (await conn.execute(select(jobs).where(jobs.c.id.in_(list(ids))))).mappings().all()


async def load_by_worker(
    conn: AsyncConnection, of: Collection[str] | None = None
) -> dict[str, WorkerLoad]:
    """worker_id -> what its active attempts hold (of every worker, or those ``of``); the
    GPUs by index, read only when some attempt holds any."""
    active = and_(jobs.c.state.in_(_ACTIVE), jobs.c.worker_id.is_not(None))
    if of is not None:
        active = and_(active, jobs.c.worker_id.in_(list(of)))
    victim = or_(jobs.c.preemptible, jobs.c.state == JobState.PREEMPTING.value)
    q = select(
        jobs.c.worker_id, func.count(), func.coalesce(func.sum(jobs.c.gpus), 0),
        func.coalesce(func.sum(jobs.c.cpus), 0), func.coalesce(func.sum(jobs.c.memory_gb), 0),
        func.coalesce(func.sum(case((victim, 1), else_=0)), 0),
    ).where(active).group_by(jobs.c.worker_id)  # fmt: skip
    rows = (await conn.execute(q)).all()
    held: dict[str, set[int]] = {}
    if any(g for _, _, g, _, _, _ in rows):
        q2 = select(jobs.c.worker_id, jobs.c.gpu_ids).where(active, jobs.c.gpus > 0)
        for worker_id, ids in (await conn.execute(q2)).all():
            held.setdefault(worker_id, set()).update(ids or ())
    return {
        w: WorkerLoad(int(n), int(g), frozenset(held.get(w, ())), float(c), int(m * 1024**3),
                      int(p))
        for w, n, g, c, m, p in rows
    }  # fmt: skip


async def victims(conn: AsyncConnection, worker_ids: Collection[str]) -> Sequence[RowMapping]:
    """The active jobs on these workers that a higher priority may stop, and those being
    stopped: what they hold and their priority."""
    q = select(jobs.c.id, jobs.c.worker_id, jobs.c.priority, jobs.c.state, jobs.c.gpu_ids,
               jobs.c.gpus, jobs.c.cpus, jobs.c.memory_gb, jobs.c.created_at).where(
        jobs.c.worker_id.in_(list(worker_ids)), jobs.c.state.in_(_ACTIVE),
        or_(jobs.c.preemptible, jobs.c.state == JobState.PREEMPTING.value),
    )  # fmt: skip
    return (await conn.execute(q)).mappings().all()


async def usage_by_tenant(
    conn: AsyncConnection, tenants: Collection[str] | None
) -> dict[str, tuple[int, int]]:
    """tenant -> (its active attempts, the GPUs they hold); of these tenants, or of all."""
    q = (
        select(jobs.c.tenant_id, func.count(), func.coalesce(func.sum(jobs.c.gpus), 0))
        .where(jobs.c.state.in_(_ACTIVE),
               jobs.c.tenant_id.in_(list(tenants)) if tenants is not None else true())
        .group_by(jobs.c.tenant_id)
    )  # fmt: skip
    return {t: (int(n), int(g)) for t, n, g in (await conn.execute(q)).all()}


async def members_of(conn: AsyncConnection, tenant_id: str, gang_id: str) -> list[str]:
    """A gang's jobs by rank."""
    q = (select(jobs.c.id).where(jobs.c.tenant_id == tenant_id, jobs.c.gang_id == gang_id)
         .order_by(jobs.c.rank))  # fmt: skip
    return list((await conn.execute(q)).scalars().all())


async def gang(conn: AsyncConnection, gang_id: str) -> Sequence[RowMapping]:
    """A gang's members, by rank."""
    q = select(jobs).where(jobs.c.gang_id == gang_id).order_by(jobs.c.rank)
    return (await conn.execute(q)).mappings().all()


async def active_on_shared(conn: AsyncConnection, tenant_id: str) -> Sequence[RowMapping]:
    """A tenant's active jobs on workers that serve every tenant."""
    q = (
        select(jobs)
        .select_from(jobs.join(workers, jobs.c.worker_id == workers.c.id))
        .where(jobs.c.tenant_id == tenant_id, jobs.c.state.in_(_ACTIVE), workers.c.shared)
    )
    return (await conn.execute(q)).mappings().all()


async def active_on(conn: AsyncConnection, worker_id: str) -> Sequence[RowMapping]:
    q = select(jobs).where(jobs.c.worker_id == worker_id, jobs.c.state.in_(_ACTIVE))
    return (await conn.execute(q)).mappings().all()


async def orphaned(conn: AsyncConnection) -> Sequence[RowMapping]:
    """Active jobs whose worker is gone or offline: their attempt is lost. Each row also
    says whether its worker still exists (``worker_exists``)."""
    q = (
        select(jobs, workers.c.id.is_not(None).label("worker_exists"))
        .select_from(jobs.outerjoin(workers, jobs.c.worker_id == workers.c.id))
        .where(
            jobs.c.state.in_(_ACTIVE),
            or_(workers.c.id.is_(None), workers.c.status == WorkerStatus.OFFLINE.value),
        )
    )
    return (await conn.execute(q)).mappings().all()


# ---- attempts ---------------------------------------------------------------


async def insert_attempts(conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    await conn.execute(attempts.insert(), [dict(r) for r in rows])


# What a report's decision reads of its job and attempt (JobSnap, AttemptSnap), and no more:
# the job's JSON columns are what cost most to read.
_REPORTED = (jobs.c.id, jobs.c.tenant_id, jobs.c.state, jobs.c.attempt, jobs.c.worker_id,
             jobs.c.max_retries, jobs.c.gpus, jobs.c.gang_id, jobs.c.preemptions,
             jobs.c.created_at, jobs.c.started_at)  # fmt: skip
_ATTEMPT = (attempts.c.worker_id.label("att_worker_id"), attempts.c.outcome,
            attempts.c.assigned_at, attempts.c.reported_ns, attempts.c.number,
            attempts.c.finished_at.label("att_finished_at"))  # fmt: skip


async def reported(
    conn: AsyncConnection, tenant_id: str | None, refs: Mapping[str, int], *,
    for_update: bool = False,
) -> dict[str, RowMapping]:  # fmt: skip
    """job id -> the job with its attempt named in ``refs`` (job id -> number; the attempt's
    columns None when there is none), in one statement; ``for_update`` locks the jobs' rows
    until commit, in id order (PostgreSQL)."""
    on = and_(attempts.c.job_id == jobs.c.id,
              tuple_(attempts.c.job_id, attempts.c.number).in_(list(refs.items())))  # fmt: skip
    q = (
        select(*_REPORTED, *_ATTEMPT)
        .select_from(jobs.outerjoin(attempts, on))
        .where(
            jobs.c.id.in_(list(refs)),
            jobs.c.tenant_id == tenant_id if tenant_id is not None else true(),
        )
        .order_by(jobs.c.id)
    )
    if for_update:
        q = q.with_for_update(key_share=True, of=jobs)
    return {r["id"]: r for r in (await conn.execute(q)).mappings().all()}


async def update_attempts(
    conn: AsyncConnection, keys: Sequence[str], rows: Sequence[tuple[str, int, Mapping[str, Any]]]
) -> None:
    """Set ``keys`` of each attempt (job id, number, values) in one statement."""
    q = update(attempts).where(attempts.c.job_id == bindparam("k_job"),
                               attempts.c.number == bindparam("k_number"))  # fmt: skip
    params = [{"k_job": j, "k_number": n, **{f"v_{k}": v[k] for k in keys}} for j, n, v in rows]
    await conn.execute(q.values(**_binds(attempts, keys)), params)


async def attempts_for(
    conn: AsyncConnection, refs: Collection[tuple[str, int]]
) -> Sequence[RowMapping]:
    """The attempts named by (job id, number)."""
    if not refs:
        return []
    wanted = [and_(attempts.c.job_id == j, attempts.c.number == n) for j, n in refs]
    return (await conn.execute(select(attempts).where(or_(*wanted)))).mappings().all()


async def attempts_of(conn: AsyncConnection, job_id: str) -> Sequence[RowMapping]:
    q = select(attempts).where(attempts.c.job_id == job_id).order_by(attempts.c.number)
    return (await conn.execute(q)).mappings().all()


async def by_idempotency_keys(
    conn: AsyncConnection, tenant_id: str, keys: Collection[str]
) -> dict[str, RowMapping]:
    """key -> job, for those of ``keys`` some job was submitted under."""
    q = select(jobs).where(jobs.c.tenant_id == tenant_id, jobs.c.idempotency_key.in_(list(keys)))
    return {r["idempotency_key"]: r for r in (await conn.execute(q)).mappings().all()}


async def states_of(
    conn: AsyncConnection, tenant_id: str, ids: Collection[str],
    states: Collection[str] | None = None,
) -> dict[str, str]:  # fmt: skip
    """id -> state, for those of ``ids`` that are the tenant's (no JSON column read), and
    only those in ``states`` when it is given."""
    q = select(jobs.c.id, jobs.c.state).where(jobs.c.tenant_id == tenant_id,
                                              jobs.c.id.in_(list(ids)))  # fmt: skip
    if states is not None:
        q = q.where(jobs.c.state.in_(list(states)))
    return {i: st for i, st in (await conn.execute(q)).all()}


async def of_tenant(
    conn: AsyncConnection, tenant_id: str, ids: Collection[str],
    states: Collection[str] | None = None,
) -> dict[str, RowMapping]:  # fmt: skip
    """id -> job, for those of ``ids`` that are the tenant's, and only those in ``states``
    when it is given."""
    q = select(jobs).where(jobs.c.tenant_id == tenant_id, jobs.c.id.in_(list(ids)))
    if states is not None:
        q = q.where(jobs.c.state.in_(list(states)))
    return {r["id"]: r for r in (await conn.execute(q)).mappings().all()}
