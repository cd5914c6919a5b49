"""The domain: jobs, attempts, workers, their states and legal transitions. No I/O."""

from corral.model.errors import (
    AlreadyExists,
    CorralError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StaleAttempt,
    Unauthenticated,
    WorkerBusy,
)
from corral.model.job import (
    ACTIVE_JOB_STATES,
    TERMINAL_JOB_STATES,
    AttemptOutcome,
    JobState,
    check_job_transition,
    next_after_attempt,
    retry_delay,
)
from corral.model.worker import (
    ROLE_RANK,
    Role,
    WorkerStatus,
    WorkerType,
    check_worker_transition,
)

DEFAULT_TENANT = "default"

__all__ = [
    "ACTIVE_JOB_STATES",
    "DEFAULT_TENANT",
    "ROLE_RANK",
    "TERMINAL_JOB_STATES",
    "AlreadyExists",
    "AttemptOutcome",
    "CorralError",
    "IllegalTransition",
    "InvalidInput",
    "JobState",
    "NotFound",
    "PermissionDenied",
    "Role",
    "StaleAttempt",
    "Unauthenticated",
    "WorkerBusy",
    "WorkerStatus",
    "WorkerType",
    "check_job_transition",
    "check_worker_transition",
    "next_after_attempt",
    "retry_delay",
]
