"""``apply``: the only writer of a job's or a worker's state.

It carries out what a decision returned (``corral.model.changes``) inside the stimulus's
transaction: guarded moves through the transition tables, their consequences only when they
land, the outbox, and one history entry per change with the stimulus's cause. Wake-ups and
log lines are queued on the ``Tx`` for after the commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from corral.model import ACTIVE_JOB_STATES, JobState, WorkerStatus
from corral.model.changes import (
    Assign,
    Cancel,
    Change,
    ClearOutbox,
    DeleteWorker,
    EndStream,
    ForgetDrop,
    InsertJob,
    InsertWorker,
    MoveJob,
    MoveWorker,
    Notify,
    Record,
    StartAttempt,
    UpdateAttempt,
    UpdateWorker,
    Why,
)
from corral.model.history import Kind, job_kind, worker_kind
from corral.protocol import JobAssign, JobCancel, WorkerDrain
from corral.store import jobs as jobs_q
from corral.store import streams
from corral.store import workers as workers_q

if TYPE_CHECKING:
    from corral.server.core import Tx


def job_assign(spec: Any, attempt: int) -> JobAssign:
    """The one builder of the ``job.assign`` event, from the stored job."""
    return JobAssign(job_id=spec["id"], attempt=attempt, name=spec["name"], kind=spec["kind"],
                     command=spec["command"], env=spec["env"], timeout_s=spec["timeout_s"],
                     gpus=spec["gpus"], call=spec.get("call"))  # fmt: skip


async def apply(t: Tx, changes: Iterable[Change]) -> list[Change]:
    missed: list[Change] = []
    for change in changes:
        if not await _one(t, change):
            missed.append(change)
    return missed


async def _one(t: Tx, c: Change) -> bool:
    conn = t.conn
    if isinstance(c, MoveJob):
        if c.worker_id and c.frm in ACTIVE_JOB_STATES:
            await workers_q.lock(conn, c.worker_id)  # worker before job, as everywhere
        if not await jobs_q.transition(conn, c.job_id, c.frm, c.to, expected_attempt=c.attempt,
                                       **c.fields):  # fmt: skip
            return False
        _entry(t, job_kind(c.frm, c.to), c.tenant_id, c.why, job_id=c.job_id,
               worker_id=c.worker_id, attempt=c.fields.get("attempt", c.attempt),
               from_state=c.frm, to_state=c.to)  # fmt: skip
        t.jobs.add(c.job_id)
        freed = c.frm in ACTIVE_JOB_STATES and c.to not in ACTIVE_JOB_STATES
        if c.to is JobState.QUEUED or freed:
            t.kick = True  # queued again, or a slot came free
        await t.at("moved", move=c)
        await apply(t, c.then)
    elif isinstance(c, MoveWorker):
        if not await workers_q.set_status(conn, c.worker_id, c.frm, c.to, **c.fields):
            return False
        kind = worker_kind(c.frm, c.to)
        if kind is not None:
            _entry(t, kind, c.tenant_id, c.why, worker_id=c.worker_id, from_state=c.frm,
                   to_state=c.to)  # fmt: skip
        if c.to is WorkerStatus.IDLE:
            t.kick = True  # it takes work now
        await apply(t, c.then)
    elif isinstance(c, InsertJob):
        await jobs_q.insert(conn, dict(c.values))
        v = c.values
        _entry(t, Kind.JOB_SUBMITTED, v["tenant_id"], c.why, job_id=v["id"],
               to_state=JobState.QUEUED)  # fmt: skip
        t.jobs.add(v["id"])
        t.kick = True
    elif isinstance(c, StartAttempt):
        await jobs_q.insert_attempt(conn, {"job_id": c.job_id, "number": c.number,
                                           "tenant_id": c.tenant_id, "worker_id": c.worker_id,
                                           "assigned_at": c.assigned_at})  # fmt: skip
    elif isinstance(c, UpdateAttempt):
        await jobs_q.update_attempt(conn, c.job_id, c.number, **c.fields)
    elif isinstance(c, UpdateWorker):
        await workers_q.update_fields(conn, c.worker_id, **c.fields)
    elif isinstance(c, InsertWorker):
        await workers_q.insert(conn, dict(c.values))
        _entry(t, Kind.WORKER_CREATED, c.values["tenant_id"], c.why, worker_id=c.values["id"],
               detail={"name": c.values["name"], "labels": c.values["labels"],
                       "worker_type": c.values["worker_type"]})  # fmt: skip
    elif isinstance(c, DeleteWorker):
        if not await workers_q.delete_offline(conn, c.worker_id):
            return False
        _entry(t, Kind.WORKER_REMOVED, c.tenant_id, c.why, worker_id=c.worker_id)
    elif isinstance(c, Notify):
        await streams.push_event(conn, worker_id=c.worker_id, tenant_id=c.tenant_id,
                                 data=_wire(c.event), now=t.now)  # fmt: skip
        t.workers.add(c.worker_id)
        await t.at("notified", notify=c)
    elif isinstance(c, ClearOutbox):
        await streams.clear_events(conn, c.worker_id)
    elif isinstance(c, Record):
        _entry(t, c.kind, c.tenant_id, c.why, job_id=c.job_id, worker_id=c.worker_id,
               attempt=c.attempt)  # fmt: skip
        if c.job_id:
            t.jobs.add(c.job_id)
    elif isinstance(c, EndStream):
        t.end_streams.add(c.worker_id)
    elif isinstance(c, ForgetDrop):
        t.forget_drops.add(c.worker_id)
    else:  # pragma: no cover - a new Change type without a branch here
        raise TypeError(f"apply does not know {type(c).__name__}")
    return True


def _wire(event: Assign | Cancel | Any) -> dict[str, Any]:
    if isinstance(event, Assign):
        # Without "call" for a command job: a worker of an earlier version refuses fields it
        # does not know, and still runs command jobs.
        return job_assign(event.spec, event.attempt).model_dump(
            exclude={"call"} if event.spec.get("call") is None else None
        )
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
        "cause": t.cause, "actor": why.actor or t.actor,
    })  # fmt: skip
