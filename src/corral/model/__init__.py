"""The domain: jobs, attempts, workers, their states and legal transitions. No I/O."""

from corral.model.errors import (
    AlreadyExists,
    Conflict,
    CorralError,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidInput,
    NotFound,
    NotRegistered,
    PermissionDenied,
    ServerError,
    StaleAttempt,
    Unauthenticated,
    Unavailable,
    Unreachable,
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
    "Conflict",
    "CorralError",
    "IdempotencyKeyReused",
    "IllegalTransition",
    "InvalidInput",
    "JobState",
    "NotFound",
    "NotRegistered",
    "PermissionDenied",
    "Role",
    "ServerError",
    "StaleAttempt",
    "Unauthenticated",
    "Unavailable",
    "Unreachable",
    "WorkerBusy",
    "WorkerStatus",
    "WorkerType",
    "check_job_transition",
    "check_worker_transition",
    "next_after_attempt",
    "retry_delay",
]
