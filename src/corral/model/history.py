"""The vocabulary of a job's and a worker's history: what happened, and why."""

from __future__ import annotations

from enum import StrEnum

from corral.model.job import JobState
from corral.model.worker import WorkerStatus


class Kind(StrEnum):
    """The name of a history entry (and of the coordinator's log line for it)."""

    JOB_SUBMITTED = "job.submitted"
    JOB_ASSIGNED = "job.assigned"
    JOB_RUNNING = "job.running"
    JOB_REQUEUED = "job.requeued"
    JOB_CANCEL_REQUESTED = "job.cancel_requested"
    JOB_PREEMPTING = "job.preempting"  # told to stop for a higher-priority job
    JOB_CHECKPOINTED = "job.checkpointed"  # an attempt stored a checkpoint (detail: its step)
    JOB_RESUMED = "job.resumed"  # an attempt was handed a checkpoint to go on from
    JOB_OUTPUT_STORED = "job.output_stored"  # a declared output was collected
    JOB_SUCCEEDED = "job.succeeded"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    WORKER_CREATED = "worker.created"
    WORKER_REGISTERED = "worker.registered"
    WORKER_CONNECTED = "worker.connected"
    WORKER_DRAINING = "worker.draining"
    WORKER_OFFLINE = "worker.offline"
    WORKER_TOKEN_ROTATED = "worker.token_rotated"
    WORKER_CONSTRAINED = "worker.constrained"  # it takes no new work, and says why
    WORKER_UNCONSTRAINED = "worker.unconstrained"
    WORKER_PAUSED = "worker.paused"  # its admin: no new work until resumed
    WORKER_RESUMED = "worker.resumed"
    WORKER_REMOVED = "worker.removed"
    WORKER_REGISTRATION_ISSUED = "worker.registration_issued"  # a single-use enrolment token
    WORKER_ENROLLED = "worker.enrolled"  # it traded one and a CSR for a certificate
    WORKER_CERT_RENEWED = "worker.certificate_renewed"
    TENANT_ONBOARDED = "tenant.onboarded"
    TENANT_SUSPENDED = "tenant.suspended"
    TENANT_RESUMED = "tenant.resumed"
    TENANT_QUOTA_SET = "tenant.quota_set"  # its operator's caps on running jobs and GPUs
    KEY_CREATED = "key.created"
    KEY_ROTATED = "key.rotated"
    KEY_REVOKED = "key.revoked"
    AUTH_REFUSED = "auth.refused"  # a request without valid credentials (401)
    ACCESS_DENIED = "access.denied"  # valid credentials asking for what they may not (403)


class Reason(StrEnum):
    """Why an attempt was lost or a worker went offline: a stable code beside the words."""

    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    STREAM_DROPPED = "stream_dropped"
    NOT_LISTED = "not_listed"  # its worker's heartbeats no longer list the attempt
    CAME_BACK_WITHOUT = "came_back_without"  # its worker registered again without it
    WORKER_OFFLINE = "worker_offline"
    WORKER_REMOVED = "worker_removed"
    DISCONNECTED = "disconnected"
    EXPIRED = "expired"  # an offline ephemeral worker past its time to live
    DECLINED = "declined"  # its worker could not run it (its disk is full…) and said so
    TENANT_SUSPENDED = "tenant_suspended"  # an operator suspended the worker's tenant
    GANG_STOPPED = "gang_stopped"  # another member of its gang ended: the gang goes as one


def job_kind(frm: JobState | None, to: JobState) -> Kind:
    """The history entry a job's move from ``frm`` (None: created) to ``to`` makes."""
    if to is JobState.QUEUED:
        return Kind.JOB_SUBMITTED if frm is None else Kind.JOB_REQUEUED
    if to is JobState.CANCELLING:
        return Kind.JOB_CANCEL_REQUESTED
    return Kind(f"job.{to.value}")


def worker_kind(frm: WorkerStatus, to: WorkerStatus) -> Kind | None:
    """The history entry a worker's move makes; None where a register already says it."""
    if to is WorkerStatus.CONNECTING:
        return None  # recorded as worker.registered, with what it registered
    if to is WorkerStatus.IDLE:
        return Kind.WORKER_CONNECTED
    if to is WorkerStatus.DRAINING:
        return Kind.WORKER_DRAINING
    if to is WorkerStatus.OFFLINE:
        return Kind.WORKER_OFFLINE
    return None
