"""Job service: submit, cancel, attempt reports and logs. Every job state change after
submit goes through ``end_attempt`` or a guarded transition here."""

from __future__ import annotations

import base64
import os
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from corral.model import (
    ACTIVE_JOB_STATES,
    AttemptOutcome,
    IllegalTransition,
    InvalidInput,
    JobState,
    NotFound,
    StaleAttempt,
)
from corral.protocol import (
    AttemptReport,
    AttemptView,
    JobCancel,
    JobList,
    JobSubmit,
    JobView,
    LogBatch,
)
from corral.server.auth import Identity, WorkerIdentity, new_id
from corral.server.core import Core, Tx
from corral.server.leases import end_attempt
from corral.store import as_utc, streams
from corral.store import jobs as jobs_q
from corral.store import workers as workers_q

_OUTCOME = {
    "succeeded": AttemptOutcome.SUCCEEDED,
    "failed": AttemptOutcome.FAILED,
    "timed_out": AttemptOutcome.TIMED_OUT,
    "cancelled": AttemptOutcome.CANCELLED,
}


def view(row: RowMapping) -> JobView:
    return JobView(
        id=row["id"],
        name=row["name"],
        state=JobState(row["state"]),
        kind=row["kind"],
        command=row["command"],
        worker_labels=row["worker_labels"],
        gpus=row["gpus"],
        priority=row["priority"],
        max_retries=row["max_retries"],
        timeout_s=row["timeout_s"],
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        created_at=as_utc(row["created_at"]),
        started_at=as_utc(row["started_at"]),
        finished_at=as_utc(row["finished_at"]),
        exit_code=row["exit_code"],
        error=row["error"],
        result=row["result"],
    )


async def _get(t: Tx, tenant_id: str, job_id: str, *, lock: bool = False) -> RowMapping:
    row = await jobs_q.get(t.conn, tenant_id, job_id, for_update=lock)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


async def submit(
    core: Core, who: Identity, body: JobSubmit, idempotency_key: str | None
) -> tuple[JobView, bool]:
    """Queue a job. With an Idempotency-Key, a repeat returns the first job (created=False)."""
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise InvalidInput("Idempotency-Key must be 1-200 characters", field="Idempotency-Key")
    now = core.clock.now()
    values: dict[str, Any] = {
        "id": new_id("job"),
        "tenant_id": who.tenant_id,
        "name": body.name or os.path.basename(body.command[0])[:200] or "job",
        "kind": body.kind,
        "command": body.command,
        "env": body.env,
        "worker_labels": body.worker_labels,
        "gpus": body.gpus,
        "priority": body.priority,
        "max_retries": body.max_retries,
        "timeout_s": body.timeout_s,
        "state": JobState.QUEUED.value,
        "attempt": 0,
        "idempotency_key": idempotency_key,
        "created_at": now,
    }
    try:
        async with core.tx() as t:
            if idempotency_key:
                old = await jobs_q.by_idempotency_key(t.conn, who.tenant_id, idempotency_key)
                if old is not None:
                    return view(old), False
            await jobs_q.insert(t.conn, values)
            t.kick = True
            row = await _get(t, who.tenant_id, values["id"])
            return view(row), True
    except IntegrityError:
        if not idempotency_key:
            raise
        # Two submits with one key raced; the other one won.
        async with core.tx() as t:
            old = await jobs_q.by_idempotency_key(t.conn, who.tenant_id, idempotency_key)
        if old is None:
            raise
        return view(old), False


async def get(core: Core, tenant_id: str, job_id: str, *, attempts: bool = False) -> JobView:
    async with core.tx() as t:
        job = view(await _get(t, tenant_id, job_id))
        if attempts:
            rows = await jobs_q.attempts_of(t.conn, job_id)
            job.attempts = [AttemptView(
                number=a["number"], worker_id=a["worker_id"], outcome=a["outcome"],
                assigned_at=as_utc(a["assigned_at"]), started_at=as_utc(a["started_at"]),
                finished_at=as_utc(a["finished_at"]), exit_code=a["exit_code"], error=a["error"],
            ) for a in rows]  # fmt: skip
        return job


def _cursor(row: JobView) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, jid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        if "\x00" in jid:
            raise ValueError("NUL in the id")
        return datetime.fromisoformat(at), jid
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this server gave out", field="cursor") from exc


async def page(
    core: Core, tenant_id: str, *, states: list[str], worker_id: str | None, limit: int,
    cursor: str | None,
) -> JobList:  # fmt: skip
    for s in states:
        if s not in JobState.__members__.values():
            raise InvalidInput(f"unknown state {s!r}", field="state")
    before = _parse_cursor(cursor) if cursor else None
    async with core.tx() as t:
        rows = await jobs_q.page(t.conn, tenant_id, states=states, worker_id=worker_id,
                                 limit=limit, before=before)  # fmt: skip
    items = [view(r) for r in rows]
    return JobList(jobs=items, next_cursor=_cursor(items[-1]) if len(items) == limit else None)


async def cancel(core: Core, tenant_id: str, job_id: str) -> JobView:
    for _ in range(5):  # a guarded move can lose a race; read again and retry
        async with core.tx() as t:
            # Worker before job, as everywhere: lock the worker it runs on (if any), then
            # the job; if it moved to another worker meanwhile, start again.
            worker_id = (await _get(t, tenant_id, job_id))["worker_id"]
            if worker_id:
                await workers_q.lock(t.conn, worker_id)
            row = await _get(t, tenant_id, job_id, lock=True)
            if row["worker_id"] not in (worker_id, None):
                continue
            state = JobState(row["state"])
            if state is JobState.CANCELLING:
                return view(row)
            if state is JobState.QUEUED:
                moved = await jobs_q.transition(t.conn, job_id, state, JobState.CANCELLED,
                                                finished_at=core.clock.now(),
                                                error="cancelled before it ran")  # fmt: skip
            elif state in ACTIVE_JOB_STATES:
                moved = await jobs_q.transition(t.conn, job_id, state, JobState.CANCELLING,
                                                expected_attempt=row["attempt"])  # fmt: skip
                if moved:
                    event = JobCancel(job_id=job_id, attempt=row["attempt"])
                    await streams.push_event(t.conn, worker_id=row["worker_id"],
                                             tenant_id=tenant_id, data=event.model_dump(),
                                             now=core.clock.now())  # fmt: skip
                    t.workers.add(row["worker_id"])
            else:
                raise IllegalTransition(f"job {job_id} already {state}")
            if moved:
                t.jobs.add(job_id)
                return view(await _get(t, tenant_id, job_id))
    raise IllegalTransition(f"job {job_id} keeps changing; try again")


async def _current_attempt(
    t: Tx, w: WorkerIdentity, job_id: str, attempt: int, *, lock: bool = False
) -> RowMapping:
    """The job, if ``attempt`` is one this worker was given; else the report is stale.
    ``lock``: the worker's row, then the job's, stay locked until commit."""
    if lock:
        await workers_q.lock(t.conn, w.worker_id)
    row = await _get(t, w.tenant_id, job_id, lock=lock)
    att = await jobs_q.get_attempt(t.conn, job_id, attempt)
    if att is None or att["worker_id"] != w.worker_id or att["outcome"] == AttemptOutcome.LOST:
        raise StaleAttempt(f"attempt {attempt} of {job_id} is not current on this worker")
    return row


async def report(core: Core, w: WorkerIdentity, job_id: str, r: AttemptReport) -> JobState:
    async with core.tx() as t:
        # Locked: a cancel or a reap committing meanwhile would otherwise make the guarded
        # move below miss, and the worker would drop a result it was right to report.
        row = await _current_attempt(t, w, job_id, r.attempt, lock=True)
        state = JobState(row["state"])
        current = row["attempt"] == r.attempt and row["worker_id"] == w.worker_id
        if r.status == "running":
            if not current or state not in ACTIVE_JOB_STATES:
                raise StaleAttempt(f"attempt {r.attempt} of {job_id} has ended")
            if state is JobState.ASSIGNED:
                now = core.clock.now()
                await jobs_q.transition(t.conn, job_id, state, JobState.RUNNING,
                                        expected_attempt=r.attempt, started_at=now)  # fmt: skip
                await jobs_q.update_attempt(t.conn, job_id, r.attempt, started_at=now)
                t.jobs.add(job_id)
                return JobState.RUNNING
            return state
        outcome = _OUTCOME[r.status]
        if current and state in ACTIVE_JOB_STATES:
            new = await end_attempt(core, t, row, outcome, exit_code=r.exit_code,
                                    error=r.error, result=r.result)  # fmt: skip
            if new is None:
                raise StaleAttempt(f"attempt {r.attempt} of {job_id} ended meanwhile")
            return new
        att = await jobs_q.get_attempt(t.conn, job_id, r.attempt)
        if att is not None and att["outcome"] == outcome.value:
            return state  # the same report again (a retry): accepted once, acknowledged again
        raise StaleAttempt(f"attempt {r.attempt} of {job_id} has ended")


async def append_logs(core: Core, w: WorkerIdentity, job_id: str, batch: LogBatch) -> None:
    async with core.tx() as t:
        await _current_attempt(t, w, job_id, batch.attempt)
        await streams.append_log(t.conn, job_id=job_id, attempt=batch.attempt, seq=batch.seq,
                                 tenant_id=w.tenant_id, data=batch.data)  # fmt: skip
        t.jobs.add(job_id)


async def logs_after(
    core: Core, tenant_id: str, job_id: str, after_id: int
) -> tuple[list[RowMapping], JobState]:
    async with core.tx() as t:
        row = await _get(t, tenant_id, job_id)
        chunks = await streams.logs_after(t.conn, tenant_id, job_id, after_id)
    return list(chunks), JobState(row["state"])
