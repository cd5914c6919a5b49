"""Leases: how an attempt ends, how a worker goes offline, and what that does to its jobs.

Execution is at-least-once; a job's result is accepted exactly once, because every move
here is a guarded UPDATE on (state, attempt).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy.engine import RowMapping

from corral.model import AttemptOutcome, JobState, WorkerStatus, next_after_attempt, retry_delay
from corral.server.core import Core, Tx
from corral.store import jobs as jobs_q
from corral.store import workers as workers_q


async def end_attempt(
    core: Core, t: Tx, row: RowMapping, outcome: AttemptOutcome, *,
    exit_code: int | None = None, error: str | None = None, result: dict[str, Any] | None = None,
) -> JobState | None:  # fmt: skip
    """End the job's current attempt; requeue with backoff or finish. None: lost a race."""
    if row["worker_id"]:
        await workers_q.lock(t.conn, row["worker_id"])  # worker before job, as everywhere
    state, attempt = JobState(row["state"]), row["attempt"]
    nxt = next_after_attempt(state, outcome, attempt, row["max_retries"])
    now = core.clock.now()
    if nxt is JobState.QUEUED:
        s = core.settings
        delay = retry_delay(attempt, s.retry_backoff_base_s, s.retry_backoff_cap_s)
        values: dict[str, Any] = {"worker_id": None, "error": error,
                                  "not_before": now + timedelta(seconds=delay)}  # fmt: skip
    else:
        values = {"finished_at": now, "exit_code": exit_code, "error": error,
                  "result": result if nxt is JobState.SUCCEEDED else None}  # fmt: skip
    if not await jobs_q.transition(
        t.conn, row["id"], state, nxt, expected_attempt=attempt, **values
    ):
        return None
    await jobs_q.update_attempt(t.conn, row["id"], attempt, outcome=outcome.value,
                                finished_at=now, exit_code=exit_code, error=error)  # fmt: skip
    if row["worker_id"]:
        await settle_worker(t, row["worker_id"])
    t.jobs.add(row["id"])
    t.kick = True
    return nxt


async def lose_attempts(core: Core, t: Tx, worker_id: str, reason: str) -> None:
    for row in await jobs_q.active_on(t.conn, worker_id):
        await end_attempt(core, t, row, AttemptOutcome.LOST, error=reason)


async def settle_worker(t: Tx, worker_id: str) -> None:
    """BUSY while it holds an attempt, IDLE when it holds none."""
    rows = await workers_q.by_ids(t.conn, [worker_id])
    if not rows:
        return
    status = WorkerStatus(rows[0]["status"])
    held = await jobs_q.count_active_on(t.conn, worker_id)
    if status is WorkerStatus.BUSY and held == 0:
        await workers_q.set_status(t.conn, worker_id, status, WorkerStatus.IDLE)
    elif status is WorkerStatus.IDLE and held > 0:
        await workers_q.set_status(t.conn, worker_id, status, WorkerStatus.BUSY)


async def go_offline(core: Core, t: Tx, row: RowMapping, reason: str) -> bool:
    """Mark a worker OFFLINE and lose its attempts (requeued while retries remain)."""
    status = WorkerStatus(row["status"])
    if status is WorkerStatus.OFFLINE:
        return False
    if not await workers_q.set_status(
        t.conn, row["id"], status, WorkerStatus.OFFLINE, offline_since=core.clock.now()
    ):
        return False
    await lose_attempts(core, t, row["id"], reason)
    core.hub.end_stream(row["id"])
    return True
