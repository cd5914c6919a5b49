"""Decisions as pure functions: a snapshot in, the changes out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from corral.model import AttemptOutcome, JobState, NotRegistered, StaleAttempt, decide
from corral.model.changes import (
    Assign,
    Cancel,
    ClearOutbox,
    Drain,
    EndStream,
    MoveJob,
    MoveWorker,
    Notify,
    Record,
    UpdateAttempt,
    UpdateWorker,
    Why,
)
from corral.model.history import Kind, Reason, job_kind, worker_kind
from corral.model.snapshot import AttemptSnap, JobSnap, Policy, WorkerLoad, WorkerSnap
from corral.model.worker import WorkerStatus, WorkerType, shown_status
from corral.scheduler import offer

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = Policy(retry_backoff_base_s=2, retry_backoff_cap_s=60, unclaimed_grace_s=30)


def job(id="j1", state=JobState.RUNNING, attempt=1, worker="w1", retries=3) -> JobSnap:
    return JobSnap(id, "t", state, attempt, worker, retries)


def worker(status=WorkerStatus.IDLE, kind=WorkerType.PERSISTENT, slots=2, taken=0) -> WorkerSnap:
    return WorkerSnap("w1", "t", status, kind, slots, {}, (), taken, NOW, NOW)


def test_a_lost_attempt_is_requeued_with_backoff_until_retries_run_out():
    move = decide.end_attempt(
        job(attempt=2), AttemptOutcome.LOST, now=NOW, policy=POLICY,
        error="no heartbeat for 120s", reason=Reason.HEARTBEAT_TIMEOUT,
    )  # fmt: skip
    assert (move.frm, move.to, move.attempt) == (JobState.RUNNING, JobState.QUEUED, 2)
    assert move.fields["not_before"] == NOW + timedelta(seconds=4)
    assert move.why.detail == {"outcome": "lost", "backoff_s": 4.0}
    assert move.why.reason == "heartbeat_timeout"
    assert move.then == (UpdateAttempt("j1", 2, {"outcome": "lost", "finished_at": NOW,
                                                 "exit_code": None,
                                                 "error": "no heartbeat for 120s"}),)  # fmt: skip
    last = decide.end_attempt(job(attempt=4), AttemptOutcome.LOST, now=NOW, policy=POLICY)
    assert last.to is JobState.FAILED and last.fields["finished_at"] == NOW


def test_a_history_message_is_the_first_line_of_the_error():
    move = decide.end_attempt(job(), AttemptOutcome.FAILED, now=NOW, policy=POLICY, exit_code=2,
                              error="exited with code 2; last output:\nTraceback …")  # fmt: skip
    assert move.why.message == "exited with code 2; last output:"
    assert move.why.detail == {"outcome": "failed", "exit_code": 2}


def test_a_report_from_an_attempt_that_is_not_current_is_stale():
    att = AttemptSnap("j1", 1, "w1", None, NOW)
    with pytest.raises(StaleAttempt):
        decide.report(job(), att, "w2", status="succeeded", now=NOW, policy=POLICY)
    lost = AttemptSnap("j1", 1, "w1", "lost", NOW)
    with pytest.raises(StaleAttempt):
        decide.report(job(), lost, "w1", status="succeeded", now=NOW, policy=POLICY)
    changes, state = decide.report(job(state=JobState.ASSIGNED), att, "w1", status="running",
                                   now=NOW, policy=POLICY)  # fmt: skip
    assert state is JobState.RUNNING and isinstance(changes[0], MoveJob)
    ended = AttemptSnap("j1", 1, "w1", "succeeded", NOW)
    done = job(state=JobState.SUCCEEDED)
    assert decide.report(done, ended, "w1", status="succeeded", now=NOW, policy=POLICY) == (
        [], JobState.SUCCEEDED,
    )  # fmt: skip


def test_register_keeps_resends_and_loses():
    w = worker()
    active = [
        job("kept"),
        job("cancelling", state=JobState.CANCELLING),
        job("unsent", state=JobState.ASSIGNED),
        job("forgotten"),
        job("newer", attempt=2),
    ]
    running = [("kept", 1), ("cancelling", 1), ("newer", 1), ("ghost", 1)]
    changes, keep, stop = decide.register(w, active, running, fields={}, capabilities={"a": 1},
                                          now=NOW, policy=POLICY)  # fmt: skip
    assert keep == [("kept", 1), ("cancelling", 1)]
    assert stop == [("newer", 1), ("ghost", 1)]
    assert isinstance(changes[0], MoveWorker) and changes[0].to is WorkerStatus.CONNECTING
    assert isinstance(changes[1], Record) and changes[1].kind is Kind.WORKER_REGISTERED
    assert changes[1].why.detail == {"a": 1}
    assert changes.index(ClearOutbox("w1")) < changes.index(
        Notify("w1", "t", Cancel("cancelling", 1))
    )
    assert Notify("w1", "t", Assign("unsent", 1)) in changes
    lost = {c.job_id: c.why.reason for c in changes if isinstance(c, MoveJob)}
    assert lost == {"forgotten": "came_back_without", "newer": "came_back_without"}


def test_a_draining_worker_stays_draining_across_a_register():
    changes, _, _ = decide.register(worker(WorkerStatus.DRAINING), [], [], fields={},
                                    capabilities={}, now=NOW, policy=POLICY)  # fmt: skip
    assert isinstance(changes[0], UpdateWorker)
    assert changes[-1] == Notify("w1", "t", Drain())


def test_a_stream_needs_a_registration():
    with pytest.raises(NotRegistered):
        decide.stream_opened(worker(WorkerStatus.OFFLINE), "c:1")
    changes = decide.stream_opened(worker(WorkerStatus.CONNECTING), "c:1")
    assert changes[-1] == MoveWorker("w1", "t", WorkerStatus.CONNECTING, WorkerStatus.IDLE)


def test_a_heartbeat_loses_only_what_it_no_longer_lists_after_the_grace():
    active = [job("old", state=JobState.ASSIGNED), job("fresh", state=JobState.ASSIGNED),
              job("listed")]  # fmt: skip
    atts = {
        ("old", 1): AttemptSnap("old", 1, "w1", None, NOW - timedelta(seconds=31)),
        ("fresh", 1): AttemptSnap("fresh", 1, "w1", None, NOW - timedelta(seconds=5)),
        ("listed", 1): AttemptSnap("listed", 1, "w1", None, NOW - timedelta(seconds=99)),
    }
    changes, stop = decide.heartbeat(worker(), active, atts, {("listed", 1): None, ("x", 1): None},
                                     now=NOW, policy=POLICY)  # fmt: skip
    assert stop == [("x", 1)]
    assert [c.job_id for c in changes if isinstance(c, MoveJob)] == ["old"]


def test_going_offline_loses_its_attempts_and_ends_its_stream():
    [move] = decide.go_offline(worker(), [job()], Reason.DISCONNECTED, "the worker disconnected",
                               now=NOW, policy=POLICY)  # fmt: skip
    assert move.to is WorkerStatus.OFFLINE and move.why.reason == "disconnected"
    assert isinstance(move.then[0], MoveJob) and move.then[-1] == EndStream("w1")
    assert decide.go_offline(worker(WorkerStatus.OFFLINE), [job()], Reason.DISCONNECTED, "",
                             now=NOW, policy=POLICY) == []  # fmt: skip


def test_cancel_a_queued_job_ends_it_and_a_running_one_tells_its_worker():
    [queued] = decide.cancel(job(state=JobState.QUEUED, worker=None), actor="key_1", now=NOW)
    assert queued.to is JobState.CANCELLED and queued.why.actor == "key_1"
    [running] = decide.cancel(job(), actor="key_1", now=NOW)
    assert running.to is JobState.CANCELLING
    assert running.then == (Notify("w1", "t", Cancel("j1", 1)),)
    assert decide.cancel(job(state=JobState.CANCELLING), actor=None, now=NOW) == []


def test_kinds_follow_from_the_move():
    assert job_kind(None, JobState.QUEUED) is Kind.JOB_SUBMITTED
    assert job_kind(JobState.RUNNING, JobState.QUEUED) is Kind.JOB_REQUEUED
    assert job_kind(JobState.RUNNING, JobState.CANCELLING) is Kind.JOB_CANCEL_REQUESTED
    assert job_kind(JobState.RUNNING, JobState.FAILED) is Kind.JOB_FAILED
    assert worker_kind(WorkerStatus.OFFLINE, WorkerStatus.CONNECTING) is None
    assert worker_kind(WorkerStatus.CONNECTING, WorkerStatus.IDLE) is Kind.WORKER_CONNECTED


def test_busy_is_shown_not_stored_and_an_ephemeral_worker_takes_one_job():
    assert shown_status(WorkerStatus.IDLE, 2) is WorkerStatus.BUSY
    assert shown_status(WorkerStatus.DRAINING, 2) is WorkerStatus.DRAINING
    assert offer(worker(slots=2), WorkerLoad(1)).free_slots == 1  # type: ignore[union-attr]
    assert offer(worker(kind=WorkerType.EPHEMERAL, slots=4, taken=1)) is None
    assert offer(worker(WorkerStatus.DRAINING)) is None
    assert decide.taken(worker(kind=WorkerType.EPHEMERAL), 1) == [
        UpdateWorker("w1", {"taken_since_register": 1})
    ]
    assert decide.taken(worker(), 3) == []


def test_an_assignment_is_not_unclaimed_while_the_coordinator_has_not_listened_a_grace():
    active = [job("late", state=JobState.ASSIGNED)]
    atts = {("late", 1): AttemptSnap("late", 1, "w1", None, NOW - timedelta(seconds=90))}
    resumed = NOW - timedelta(seconds=5)  # it was frozen until five seconds ago
    changes, _ = decide.heartbeat(worker(), active, atts, {}, now=NOW, policy=POLICY,
                                  listening_since=resumed)  # fmt: skip
    assert not [c for c in changes if isinstance(c, MoveJob)]
    changes, _ = decide.heartbeat(worker(), active, atts, {}, now=NOW, policy=POLICY,
                                  listening_since=NOW - timedelta(seconds=60))  # fmt: skip
    assert [c.job_id for c in changes if isinstance(c, MoveJob)] == ["late"]


def test_an_end_reported_before_running_starts_the_job_when_it_ends():
    att = AttemptSnap("j1", 1, "w1", None, NOW)
    [move], state = decide.report(job(state=JobState.ASSIGNED), att, "w1", status="succeeded",
                                  now=NOW, policy=POLICY, exit_code=0)  # fmt: skip
    assert state is JobState.SUCCEEDED and move.fields["started_at"] == NOW
    [ended] = move.then
    assert ended.fields["started_at"] == NOW and ended.fields["outcome"] == "succeeded"
    [move], _ = decide.report(job(), att, "w1", status="succeeded", now=NOW, policy=POLICY)
    assert "started_at" not in move.fields  # it said it ran: that start stands


def test_a_gang_member_that_fails_with_retries_left_is_queued_and_stops_the_rest():
    def member(rank, state=JobState.RUNNING, attempt=1):
        return JobSnap(f"g.{rank}", "t", state, attempt, f"w{rank}", 2, gang_id="g")

    ended = decide.end_attempt(member(1), AttemptOutcome.FAILED, now=NOW, policy=POLICY,
                               exit_code=3)  # fmt: skip
    assert ended.to is JobState.QUEUED and ended.gang_id == "g"  # a loss, for a gang
    rest = [member(0), member(1, JobState.QUEUED), member(2, JobState.ASSIGNED)]
    out = decide.gang_follows(ended, rest, now=NOW, policy=POLICY)
    moves = [c for c in out if isinstance(c, MoveJob)]
    # The others are stopped as a preemption is: holding their slots until stopped.
    assert [(m.job_id, m.to, m.why.reason) for m in moves] == [
        ("g.0", JobState.PREEMPTING, Reason.GANG_STOPPED),
        ("g.2", JobState.PREEMPTING, Reason.GANG_STOPPED),
    ]
    assert all(isinstance(m.then[0], Notify) for m in moves)  # each worker told to stop it
    # What follows leads no further; a member that ended for good cancels the others.
    assert decide.gang_follows(moves[0], rest, now=NOW, policy=POLICY) == []
    last = decide.end_attempt(member(1, attempt=3), AttemptOutcome.FAILED, now=NOW,
                              policy=POLICY)  # fmt: skip
    assert last.to is JobState.FAILED
    final = decide.gang_follows(last, [member(0), member(2, JobState.QUEUED)], now=NOW,
                                policy=POLICY)  # fmt: skip
    assert [(m.job_id, m.to) for m in final if isinstance(m, MoveJob)] == [
        ("g.0", JobState.CANCELLING),
        ("g.2", JobState.CANCELLED),
    ]
    # A member queued again after another has ended fails: the gang cannot run whole.
    done = [member(0, JobState.SUCCEEDED), member(2)]
    cut = decide.gang_follows(ended, done, now=NOW, policy=POLICY)
    assert [(m.job_id, m.to) for m in cut if isinstance(m, MoveJob)] == [
        ("g.1", JobState.FAILED),
        ("g.2", JobState.CANCELLING),
    ]
    # And one that succeeded while its gang was being stopped fails those already queued.
    won = replace(ended, job_id="g.0", frm=JobState.PREEMPTING, to=JobState.SUCCEEDED,
                  why=Why())  # fmt: skip
    assert [(m.job_id, m.to) for m in decide.gang_follows(won, rest, now=NOW, policy=POLICY)
            if isinstance(m, MoveJob)] == [("g.1", JobState.FAILED)]  # fmt: skip


def test_a_preempted_attempt_is_queued_at_once_and_uses_no_retry():
    running = JobSnap("j", "t", JobState.RUNNING, 1, "w1", 0)  # no retries at all
    (stop,) = decide.preempt(running, by="urgent")
    assert (stop.to, stop.why.detail) == (JobState.PREEMPTING, {"by": "urgent"})
    assert isinstance(stop.then[0], Notify)  # its worker is told to stop it
    stopping = replace(running, state=JobState.PREEMPTING)
    for outcome in (AttemptOutcome.CANCELLED, AttemptOutcome.FAILED, AttemptOutcome.LOST):
        ended = decide.end_attempt(stopping, outcome, now=NOW, policy=POLICY)
        assert ended.to is JobState.QUEUED and ended.fields["not_before"] is None
        assert ended.fields["preemptions"] == 1
        assert ended.then[0].fields["outcome"] == "preempted"  # type: ignore[attr-defined]
    # Its second attempt counts as its first: with one retry, a loss now is retried (were the
    # preempted attempt charged, this one would be its last).
    again = JobSnap("j", "t", JobState.RUNNING, 2, "w1", 1, preemptions=1)
    assert decide.end_attempt(again, AttemptOutcome.LOST, now=NOW, policy=POLICY).to is (
        JobState.QUEUED
    )
    spent = replace(again, max_retries=0)
    assert decide.end_attempt(spent, AttemptOutcome.LOST, now=NOW, policy=POLICY).to is (
        JobState.FAILED
    )
    # What finished before the stop reached it has succeeded.
    done = decide.end_attempt(stopping, AttemptOutcome.SUCCEEDED, now=NOW, policy=POLICY)
    assert done.to is JobState.SUCCEEDED
