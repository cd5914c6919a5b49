"""``apply``: the only writer of a job's or a worker's state.

It carries out what a decision returned (``corral.model.changes``) inside the stimulus's
transaction: guarded moves through the transition tables, their consequences only when they
land, the outbox, and one history entry per change with the stimulus's cause. Wake-ups and
log lines are queued on the ``Tx`` for after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from corral.model import (
    ACTIVE_JOB_STATES,
    TERMINAL_JOB_STATES,
    JobState,
    TenantStatus,
    WorkerStatus,
    decide,
)
from corral.model.changes import (
    Assign,
    Cancel,
    Change,
    ClearOutbox,
    DeleteKey,
    DeleteWorker,
    EndStream,
    ForgetDrop,
    InsertJob,
    InsertKey,
    InsertRegistration,
    InsertTenant,
    InsertWorker,
    MoveJob,
    MoveTenant,
    MoveWorker,
    Notify,
    Record,
    RotateKey,
    SetQuota,
    StartAttempt,
    StoreArtifact,
    UpdateAttempt,
    UpdateWorker,
    UseRegistration,
    Why,
)
from corral.model.history import Kind, job_kind, worker_kind
from corral.model.snapshot import JobSnap
from corral.protocol import Gang, JobAssign, JobCancel, WorkerDrain
from corral.store import artifacts as artifacts_q
from corral.store import jobs as jobs_q
from corral.store import keys as keys_q
from corral.store import streams
from corral.store import workers as workers_q

if TYPE_CHECKING:
    from corral.server.core import Tx


# A worker's fields that stop it taking work: when one changes, it may take some now.
_TAKES_NOTHING = frozenset({"paused_at", "constrained"})


def job_assign(
    spec: Any, attempt: int, gpu_ids: Sequence[int], rendezvous: Mapping[str, Any] | None = None
) -> JobAssign:
    """The one builder of the ``job.assign`` event, from the stored job."""
    gang = (Gang(rank=spec["rank"], world_size=spec["nodes"], **rendezvous)
            if rendezvous and spec.get("gang_id") else None)  # fmt: skip
    return JobAssign(job_id=spec["id"], attempt=attempt, name=spec["name"], kind=spec["kind"],
                     command=spec["command"], env=spec["env"], timeout_s=spec["timeout_s"],
                     gpus=spec["gpus"], gpu_ids=list(gpu_ids), call=spec.get("call"),
                     gang=gang, workdir=spec.get("workdir"),
                     requirements=spec.get("requirements"),
                     params=spec.get("params"), outputs=spec.get("outputs"))  # fmt: skip


async def apply(t: Tx, changes: Iterable[Change]) -> list[Change]:
    """Carry out ``changes`` in order; returns the guarded ones that did not land. A run of
    changes of one kind (a dispatch round's moves, a batch of reports' ends, their attempts
    and outbox events) is written with one statement per kind, not one per change: a
    statement costs far more than a row."""
    todo = list(changes)
    kinds = [_kind(c) for c in todo]
    missed: list[Change] = []
    i = 0
    while i < len(todo):
        j = i + 1
        while kinds[i] is not None and j < len(todo) and kinds[j] == kinds[i]:
            j += 1
        if j - i > 1:
            missed += await _many(t, todo[i:j])
        elif not await _one(t, todo[i]):
            missed.append(todo[i])
        i = j
    return missed


def _kind(c: Change) -> tuple[Any, ...] | None:
    """Changes of one kind can be written together; None: one at a time."""
    if isinstance(c, MoveJob):
        return ("move", c.frm, c.to)
    if isinstance(c, InsertJob):
        return ("insert", *sorted(c.values))
    if isinstance(c, UpdateAttempt):
        return ("attempt", *sorted(c.fields))
    if isinstance(c, StartAttempt | Notify):
        return (type(c),)
    return None


async def _many(t: Tx, run: list[Change]) -> list[Change]:
    first = run[0]
    if isinstance(first, MoveJob):
        return await _moves(t, cast(list[MoveJob], run))
    if isinstance(first, InsertJob):
        inserts = cast(list[InsertJob], run)
        await jobs_q.insert(t.conn, [c.values for c in inserts])
        for c in inserts:
            _inserted(t, c)
    elif isinstance(first, UpdateAttempt):
        updates = cast(list[UpdateAttempt], run)
        await jobs_q.update_attempts(t.conn, sorted(first.fields),
                                     [(c.job_id, c.number, c.fields) for c in updates])  # fmt: skip
    elif isinstance(first, StartAttempt):
        await jobs_q.insert_attempts(
            t.conn, [_attempt_row(c) for c in cast(list[StartAttempt], run)]
        )
    else:
        await _notify(t, cast(list[Notify], run))
    return []


async def _moves(t: Tx, moves: list[MoveJob]) -> list[Change]:
    """Moves of one kind (from, to) of distinct jobs: the jobs still where the moves expect
    them are locked (their workers first), moved with a statement per set of fields, and
    only their consequences follow."""
    if len({m.job_id for m in moves}) < len(moves):  # one job twice: each move sees the last
        return [m for m in moves if not await _one(t, m)]
    frm, to = moves[0].frm, moves[0].to
    if frm in ACTIVE_JOB_STATES:
        for worker_id in sorted({m.worker_id for m in moves if m.worker_id}):
            await workers_q.lock(t.conn, worker_id)  # worker before job, as everywhere
    ok = await jobs_q.movable(t.conn, frm, [(m.job_id, m.attempt) for m in moves])
    shapes: dict[tuple[str, ...], list[MoveJob]] = {}
    for m in moves:
        if m.job_id in ok:
            shapes.setdefault(tuple(sorted(m.fields)), []).append(m)
    for keys, same in shapes.items():
        moved = await jobs_q.transition_many(t.conn, frm, to, keys,
                                             [(m.job_id, m.fields) for m in same])  # fmt: skip
        if moved != len(same):  # pragma: no cover - they are locked (or SQLite's one writer)
            raise RuntimeError(f"{len(same) - moved} locked jobs moved under a transaction")
    missed: list[Change] = []
    then: list[Change] = []
    for m in moves:
        if m.job_id not in ok:
            missed.append(m)
            continue
        await _moved(t, m)
        then += m.then
    # Distinct jobs' consequences are independent: each kind written together.
    kinds: dict[Any, list[Change]] = {}
    for c in then:
        kinds.setdefault(_kind(c) or id(c), []).append(c)
    await apply(t, [c for same in kinds.values() for c in same])
    return missed


async def _moved(t: Tx, c: MoveJob) -> None:
    """What follows a job's move that landed, but its consequences."""
    _entry(t, job_kind(c.frm, c.to), c.tenant_id, c.why, job_id=c.job_id,
           worker_id=c.worker_id, attempt=c.fields.get("attempt", c.attempt),
           from_state=c.frm, to_state=c.to)  # fmt: skip
    t.jobs.add(c.job_id)
    freed = c.frm in ACTIVE_JOB_STATES and c.to not in ACTIVE_JOB_STATES
    if c.to is JobState.QUEUED or freed:
        t.kick = True  # queued again, or a slot came free
    await t.at("moved", move=c)
    if c.gang_id is not None and (c.to is JobState.QUEUED or c.to in TERMINAL_JOB_STATES):
        # (A member that succeeded is looked at too: its gang may be being queued again.)
        rest = [JobSnap.of(r) for r in await jobs_q.gang(t.conn, c.gang_id)]
        await apply(t, decide.gang_follows(c, rest, now=t.now, policy=t.policy))


def _inserted(t: Tx, c: InsertJob) -> None:
    v = c.values
    _entry(t, Kind.JOB_SUBMITTED, v["tenant_id"], c.why, job_id=v["id"],
           to_state=JobState.QUEUED)  # fmt: skip
    t.jobs.add(v["id"])
    t.kick = True


def _attempt_row(c: StartAttempt) -> dict[str, Any]:
    return {"job_id": c.job_id, "number": c.number, "tenant_id": c.tenant_id,
            "worker_id": c.worker_id, "assigned_at": c.assigned_at,
            "gpu_ids": c.gpu_ids}  # fmt: skip


async def _notify(t: Tx, notes: list[Notify]) -> None:
    await streams.push_events(t.conn, [(n.worker_id, n.tenant_id, _wire(n.event)) for n in notes],
                              t.now)  # fmt: skip
    for n in notes:
        t.workers.add(n.worker_id)
        await t.at("notified", notify=n)


async def _one(t: Tx, c: Change) -> bool:
    conn = t.conn
    if isinstance(c, MoveJob):
        if c.worker_id and c.frm in ACTIVE_JOB_STATES:
            await workers_q.lock(conn, c.worker_id)  # worker before job, as everywhere
        if not await jobs_q.transition(conn, c.job_id, c.frm, c.to, expected_attempt=c.attempt,
                                       **c.fields):  # fmt: skip
            return False
        await _moved(t, c)
        await apply(t, c.then)
    elif isinstance(c, MoveWorker):
        if not await workers_q.set_status(conn, c.worker_id, c.frm, c.to, **c.fields):
            return False
        t.changed_workers.add(c.worker_id)
        kind = worker_kind(c.frm, c.to)
        if kind is not None:
            _entry(t, kind, c.tenant_id, c.why, worker_id=c.worker_id, from_state=c.frm,
                   to_state=c.to)  # fmt: skip
        if c.to is WorkerStatus.IDLE:
            t.kick = True  # it takes work now
        await apply(t, c.then)
    elif isinstance(c, InsertJob):
        await jobs_q.insert(conn, [c.values])
        _inserted(t, c)
    elif isinstance(c, StartAttempt):
        await jobs_q.insert_attempts(conn, [_attempt_row(c)])
    elif isinstance(c, UpdateAttempt):
        await jobs_q.update_attempts(conn, sorted(c.fields), [(c.job_id, c.number, c.fields)])
    elif isinstance(c, UpdateWorker):
        await workers_q.update_fields(conn, c.worker_id, **c.fields)
        t.changed_workers.add(c.worker_id)
        if not _TAKES_NOTHING.isdisjoint(c.fields):  # it may take work now
            t.kick = True
    elif isinstance(c, InsertWorker):
        await workers_q.insert(conn, dict(c.values))
        t.changed_workers.add(c.values["id"])
        _entry(t, Kind.WORKER_CREATED, c.values["tenant_id"], c.why, worker_id=c.values["id"],
               detail={"name": c.values["name"], "labels": c.values["labels"],
                       "worker_type": c.values["worker_type"]})  # fmt: skip
    elif isinstance(c, DeleteWorker):
        if not await workers_q.delete_offline(conn, c.worker_id):
            return False
        t.changed_workers.add(c.worker_id)
        _entry(t, Kind.WORKER_REMOVED, c.tenant_id, c.why, worker_id=c.worker_id)
    elif isinstance(c, Notify):
        await _notify(t, [c])
    elif isinstance(c, ClearOutbox):
        await streams.clear_events(conn, c.worker_id)
    elif isinstance(c, Record):
        _entry(t, c.kind, c.tenant_id, c.why, job_id=c.job_id, worker_id=c.worker_id,
               attempt=c.attempt)  # fmt: skip
        if c.job_id:
            t.jobs.add(c.job_id)
    elif isinstance(c, InsertTenant | MoveTenant | SetQuota | InsertKey | RotateKey | DeleteKey):
        return await _account(t, c)
    elif isinstance(c, InsertRegistration):
        await workers_q.insert_registration(conn, dict(c.values))
        _entry(t, Kind.WORKER_REGISTRATION_ISSUED, c.values["tenant_id"], c.why, detail={
            "registration_id": c.values["id"], "name": c.values["spec"]["name"],
            "expires_at": c.values["expires_at"].isoformat()})  # fmt: skip
    elif isinstance(c, UseRegistration):
        return await workers_q.use_registration(conn, c.registration_id, c.now)
    elif isinstance(c, StoreArtifact):
        artifact_id = await artifacts_q.add(
            conn, tenant_id=c.tenant_id, job_id=c.job_id, attempt=c.attempt, kind=c.kind,
            name=c.name, step=c.step, digest=c.digest, size=c.size, now=t.now,
        )  # fmt: skip
        kind = Kind.JOB_CHECKPOINTED if c.kind == "checkpoint" else Kind.JOB_OUTPUT_STORED
        _entry(t, kind, c.tenant_id, c.why, job_id=c.job_id, attempt=c.attempt, detail={
            "artifact_id": artifact_id, "name": c.name, "step": c.step, "size": c.size,
            "digest": c.digest})  # fmt: skip
        t.jobs.add(c.job_id)
    elif isinstance(c, EndStream):
        t.end_streams.add(c.worker_id)
    elif isinstance(c, ForgetDrop):
        t.forget_drops.add(c.worker_id)
    else:  # pragma: no cover - a new Change type without a branch here
        raise TypeError(f"apply does not know {type(c).__name__}")
    return True


async def _account(
    t: Tx, c: InsertTenant | MoveTenant | SetQuota | InsertKey | RotateKey | DeleteKey
) -> bool:
    """Tenants and API keys: each change is an entry of the history, the audit's source."""
    conn = t.conn
    if isinstance(c, InsertTenant):
        await keys_q.insert_tenant(conn, dict(c.values))
        _entry(t, Kind.TENANT_ONBOARDED, c.values["id"], c.why, detail={"name": c.values["name"]})
    elif isinstance(c, MoveTenant):
        if not await keys_q.set_tenant_status(conn, c.tenant_id, c.frm, c.to, **c.fields):
            return False
        kind = Kind.TENANT_SUSPENDED if c.to is TenantStatus.SUSPENDED else Kind.TENANT_RESUMED
        t.forget_tenants.add(c.tenant_id)
        _entry(t, kind, c.tenant_id, c.why, from_state=c.frm, to_state=c.to)
    elif isinstance(c, SetQuota):
        caps = {"max_running_jobs": c.max_running_jobs, "max_gpus": c.max_gpus}
        await keys_q.update_tenant(conn, c.tenant_id, **caps)
        t.kick = True  # a raised cap may let queued jobs start
        _entry(t, Kind.TENANT_QUOTA_SET, c.tenant_id, c.why, detail=caps)
    elif isinstance(c, InsertKey):
        v = c.values
        await keys_q.insert(conn, dict(v))
        expires = v.get("expires_at")
        _entry(t, Kind.KEY_CREATED, v["tenant_id"], c.why, detail={
            "key_id": v["id"], "name": v["name"], "role": v["role"], "prefix": v.get("prefix"),
            "expires_at": expires.isoformat() if expires else None})  # fmt: skip
    elif isinstance(c, RotateKey):
        if not await keys_q.update_key(conn, c.key_id, **c.fields):
            return False
        t.forget_keys.add(c.key_id)
        _entry(t, Kind.KEY_ROTATED, c.tenant_id, c.why,
               detail={"key_id": c.key_id, "prefix": c.fields.get("prefix")})  # fmt: skip
    else:
        if not await keys_q.delete_key(conn, c.key_id):
            return False
        t.forget_keys.add(c.key_id)
        _entry(t, Kind.KEY_REVOKED, c.tenant_id, c.why, detail={"key_id": c.key_id})
    return True


def _wire(event: Assign | Cancel | Any) -> dict[str, Any]:
    if isinstance(event, Assign):
        # Without "call" for a command job: a worker of an earlier version refuses fields it
        # does not know, and still runs command jobs.
        wire = job_assign(event.spec, event.attempt, event.gpu_ids, event.rendezvous)
        return wire.model_dump(exclude={k for k in ("call", "gang") if getattr(wire, k) is None})
    if isinstance(event, Cancel):
        return JobCancel(job_id=event.job_id, attempt=event.attempt).model_dump()
    return WorkerDrain().model_dump()


def _entry(
    t: Tx, kind: Kind, tenant_id: str, why: Why, *, job_id: str | None = None,
    worker_id: str | None = None, attempt: int | None = None, from_state: str | None = None,
    to_state: str | None = None, detail: Mapping[str, Any] | None = None,
) -> None:  # fmt: skip
    t.entries.append({
        "tenant_id": tenant_id, "at": t.now, "kind": kind.value, "job_id": job_id,
        "worker_id": worker_id, "attempt": attempt or None,
        "from_state": str(from_state) if from_state else None,
        "to_state": str(to_state) if to_state else None,
        "reason": why.reason, "message": why.message,
        "detail": {**(detail or {}), **why.detail},
        "cause": t.cause, "actor": why.actor or t.actor, "source": t.source,
    })  # fmt: skip
