from __future__ import annotations

import pytest

from corral.model import (
    AttemptOutcome,
    IllegalTransition,
    JobState,
    PermissionDenied,
    WorkerStatus,
    check_job_transition,
    check_worker_transition,
    next_after_attempt,
    retry_delay,
)
from corral.model.job import JOB_TRANSITIONS, TERMINAL_JOB_STATES
from corral.model.worker import labels_in_effect


def test_terminal_states_have_no_way_out():
    for frm, _to in JOB_TRANSITIONS:
        assert frm not in TERMINAL_JOB_STATES


@pytest.mark.parametrize(
    ("frm", "to"),
    [(JobState.SUCCEEDED, JobState.QUEUED), (JobState.QUEUED, JobState.RUNNING),
     (JobState.CANCELLED, JobState.CANCELLING)],
)  # fmt: skip
def test_illegal_job_moves_raise(frm, to):
    with pytest.raises(IllegalTransition):
        check_job_transition(frm, to)


def test_worker_offline_cannot_jump_to_busy():
    with pytest.raises(IllegalTransition):
        check_worker_transition(WorkerStatus.OFFLINE, WorkerStatus.BUSY)
    check_worker_transition(WorkerStatus.OFFLINE, WorkerStatus.CONNECTING)


def test_lost_attempts_retry_until_retries_run_out():
    assert next_after_attempt(JobState.RUNNING, AttemptOutcome.LOST, 1, 3) is JobState.QUEUED
    assert next_after_attempt(JobState.RUNNING, AttemptOutcome.LOST, 3, 3) is JobState.QUEUED
    assert next_after_attempt(JobState.RUNNING, AttemptOutcome.LOST, 4, 3) is JobState.FAILED
    assert next_after_attempt(JobState.RUNNING, AttemptOutcome.TIMED_OUT, 1, 0) is JobState.FAILED


def test_own_failure_is_final_and_cancel_never_comes_back():
    assert next_after_attempt(JobState.RUNNING, AttemptOutcome.FAILED, 1, 3) is JobState.FAILED
    assert next_after_attempt(JobState.CANCELLING, AttemptOutcome.LOST, 1, 3) is JobState.CANCELLED
    assert next_after_attempt(JobState.CANCELLING, AttemptOutcome.SUCCEEDED, 1, 3) is (
        JobState.SUCCEEDED
    )


def test_backoff_doubles_up_to_the_cap():
    assert [retry_delay(n, 1, 5) for n in (1, 2, 3, 4)] == [1, 2, 4, 5]


def test_labels_in_effect_are_the_admins_and_the_allowed_ones() -> None:
    admin = {"gpu": "a100"}
    assert labels_in_effect(admin, ["zone", "rack-*"], {"zone": "eu", "rack-3": "x"}) == {
        "gpu": "a100", "zone": "eu", "rack-3": "x"
    }  # fmt: skip
    assert labels_in_effect(admin, [], {"gpu": "a100"}) == admin  # its own again: fine
    for said, field in (({"gpu": "h100"}, "labels.gpu"), ({"racks": "1"}, "labels.racks")):
        with pytest.raises(PermissionDenied) as refused:
            labels_in_effect(admin, ["rack-*"], said)
        assert refused.value.field == field
    # "*" allows any label but never one its admin set.
    with pytest.raises(PermissionDenied):
        labels_in_effect(admin, ["*"], {"gpu": "h100"})
