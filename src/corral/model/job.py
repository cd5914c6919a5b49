"""Job states, the legal transitions between them, and what follows an attempt."""

from __future__ import annotations

from enum import StrEnum

from corral.model.errors import IllegalTransition


class JobState(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"  # handed to a worker; the worker has not said it started
    RUNNING = "running"
    CANCELLING = "cancelling"  # cancel asked while on a worker; waiting for it to stop
    PREEMPTING = "preempting"  # stopping for a higher-priority job; queued again once stopped
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptOutcome(StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the job's own process exited non-zero: final
    TIMED_OUT = "timed_out"  # ran past its timeout: retried while retries remain
    LOST = "lost"  # worker died, link cut, stream dropped: retried while retries remain
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # stopped for a higher-priority job: queued again, no retry used


TERMINAL_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# States in which a job holds a slot on a worker.
ACTIVE_JOB_STATES = frozenset(
    {JobState.ASSIGNED, JobState.RUNNING, JobState.CANCELLING, JobState.PREEMPTING}
)
# States of a job told to stop: its worker is told again when it comes back.
STOPPING_JOB_STATES = frozenset({JobState.CANCELLING, JobState.PREEMPTING})

_Q, _A, _R, _C = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING, JobState.CANCELLING
_P = JobState.PREEMPTING
# (from, to) -> why that move exists. Anything else is illegal.
JOB_TRANSITIONS: dict[tuple[JobState, JobState], str] = {
    (_Q, _A): "scheduler handed it to a worker",
    (_Q, JobState.CANCELLED): "cancelled before it ran",
    (_Q, JobState.FAILED): "a gang member whose gang can no longer run whole",
    (_A, _R): "worker started the process",
    (_A, _Q): "attempt lost before start; retried",
    (_A, _C): "cancel asked",
    (_A, JobState.FAILED): "attempt lost, no retries left",
    (_A, JobState.SUCCEEDED): "worker reported success before it reported start",
    (_A, JobState.CANCELLED): "worker reported cancelled",
    (_R, JobState.SUCCEEDED): "process exited 0",
    (_R, JobState.FAILED): "process failed, or lost with no retries left",
    (_R, _Q): "attempt lost or timed out; retried",
    (_R, _C): "cancel asked",
    (_R, JobState.CANCELLED): "worker reported cancelled",
    (_C, JobState.CANCELLED): "worker stopped it, or the worker is gone",
    (_C, JobState.SUCCEEDED): "finished before the cancel reached it",
    (_C, JobState.FAILED): "failed before the cancel reached it",
    (_A, _P): "preempted for a higher-priority job before it started",
    (_R, _P): "preempted for a higher-priority job",
    (_P, _Q): "stopped for a higher-priority job; queued again",
    (_P, JobState.SUCCEEDED): "finished before it was stopped",
    (_P, _C): "cancel asked while it was being preempted",
}


def check_job_transition(frm: JobState, to: JobState) -> None:
    if (frm, to) not in JOB_TRANSITIONS:
        raise IllegalTransition(f"job cannot go from {frm} to {to}")


def retry_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff before attempt ``attempt + 1`` (attempt numbers start at 1)."""
    return min(cap_s, base_s * 2.0 ** max(0, attempt - 1))


def next_after_attempt(
    state: JobState, outcome: AttemptOutcome, attempt: int, max_retries: int,
    gang: bool = False,
) -> JobState:  # fmt: skip
    """The job's next state when its current attempt ends with ``outcome``.

    A job's own failure is final; a lost or timed-out attempt is retried while
    ``attempt <= max_retries``. A job being cancelled never comes back; one being preempted
    always does (``attempt`` is to count only the attempts that were not preempted). A gang member's
    failure is retried like a loss: a rank that fails often fails for its gang (a peer that
    died, a rendezvous timed out), and the gang runs again as one.
    """
    if outcome is AttemptOutcome.SUCCEEDED:
        return JobState.SUCCEEDED
    if state is JobState.PREEMPTING or outcome is AttemptOutcome.PREEMPTED:
        return JobState.QUEUED  # however it stopped: it was told to
    if outcome is AttemptOutcome.CANCELLED or state is JobState.CANCELLING:
        if outcome is AttemptOutcome.FAILED:
            return JobState.FAILED
        return JobState.CANCELLED
    if outcome is AttemptOutcome.FAILED and not gang:
        return JobState.FAILED
    return JobState.QUEUED if attempt <= max_retries else JobState.FAILED
