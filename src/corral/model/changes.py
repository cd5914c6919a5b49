"""What a decision asks for, as data: the server's ``apply`` carries it out.

A decision (``corral.model.decide``) looks at a snapshot and returns a list of these. Moves
are guarded: a ``MoveJob`` lands only if the job is still in ``frm`` at ``attempt``, and what
it carries in ``then`` happens only if it landed. Every landed move and every ``Record`` is
one entry of the history, with the cause of the stimulus that decided it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from corral.model.access import TenantStatus
from corral.model.history import Kind
from corral.model.job import JobState
from corral.model.worker import WorkerStatus


@dataclass(frozen=True, slots=True)
class Why:
    """What a history entry says beyond the move itself."""

    reason: str | None = None  # a stable code (model.history.Reason)
    message: str | None = None  # for people
    detail: Mapping[str, Any] = field(default_factory=dict)
    actor: str | None = None  # who asked, where not the stimulus's own caller


@dataclass(frozen=True, slots=True)
class InsertJob:
    values: Mapping[str, Any]  # every column of the new job, state queued
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class MoveJob:
    job_id: str
    tenant_id: str
    frm: JobState
    to: JobState
    attempt: int  # the guard: the job's current attempt number
    worker_id: str | None  # the worker concerned, for the history
    fields: Mapping[str, Any] = field(default_factory=dict)  # set with the move
    why: Why = Why()
    then: tuple[Change, ...] = ()
    gang_id: str | None = None  # a gang member's: its gang follows its end (server.apply)


@dataclass(frozen=True, slots=True)
class StartAttempt:
    job_id: str
    tenant_id: str
    number: int
    worker_id: str
    assigned_at: datetime
    gpu_ids: list[int] | None = None


@dataclass(frozen=True, slots=True)
class UpdateAttempt:
    job_id: str
    number: int
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class InsertWorker:
    values: Mapping[str, Any]
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class MoveWorker:
    worker_id: str
    tenant_id: str
    frm: WorkerStatus
    to: WorkerStatus
    fields: Mapping[str, Any] = field(default_factory=dict)
    why: Why = Why()
    then: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class UpdateWorker:
    """Fields that are not its state: heartbeat time, what it reported of itself."""

    worker_id: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteWorker:
    """Remove an offline worker (guarded: only while it is offline)."""

    worker_id: str
    tenant_id: str
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class InsertTenant:
    values: Mapping[str, Any]
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class SetQuota:
    """A tenant's quotas, as its operator set them (None: no cap)."""

    tenant_id: str
    max_running_jobs: int | None
    max_gpus: int | None
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class StoreArtifact:
    """An attempt stored a blob as one of its job's artifacts (a checkpoint, an output)."""

    tenant_id: str
    job_id: str
    attempt: int
    kind: str
    name: str
    step: int | None
    digest: str
    size: int
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class MoveTenant:
    """Suspend or resume (guarded: only from ``frm``)."""

    tenant_id: str
    frm: TenantStatus
    to: TenantStatus
    fields: Mapping[str, Any] = field(default_factory=dict)
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class InsertKey:
    values: Mapping[str, Any]  # every column but its plaintext, never stored
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class RotateKey:
    key_id: str
    tenant_id: str
    fields: Mapping[str, Any]  # its new hash and prefix
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class DeleteKey:
    key_id: str
    tenant_id: str
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class InsertRegistration:
    """A single-use registration token for a worker to enrol with (its hash)."""

    values: Mapping[str, Any]
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class UseRegistration:
    """Guarded: lands once, and only before the token ends."""

    registration_id: str
    tenant_id: str
    now: datetime


@dataclass(frozen=True, slots=True)
class Assign:
    job_id: str
    attempt: int
    spec: Any = field(default=None, repr=False, compare=False)  # the stored job
    gpu_ids: Sequence[int] = ()
    rendezvous: Mapping[str, Any] | None = None  # a gang member's: where its gang meets


@dataclass(frozen=True, slots=True)
class Cancel:
    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Drain:
    pass


@dataclass(frozen=True, slots=True)
class Notify:
    """An event for the worker's stream, through its durable outbox."""

    worker_id: str
    tenant_id: str
    event: Assign | Cancel | Drain


@dataclass(frozen=True, slots=True)
class ClearOutbox:
    worker_id: str


@dataclass(frozen=True, slots=True)
class Record:
    """A history entry that is not a move: created, registered, token rotated."""

    kind: Kind
    tenant_id: str
    job_id: str | None = None
    worker_id: str | None = None
    attempt: int | None = None
    why: Why = Why()


@dataclass(frozen=True, slots=True)
class EndStream:
    """After commit: the worker's open stream ends (offline, or its token no longer holds)."""

    worker_id: str


@dataclass(frozen=True, slots=True)
class ForgetDrop:
    """After commit: the worker is back, so its dropped stream no longer counts against it."""

    worker_id: str


Change = (
    InsertJob | MoveJob | StartAttempt | UpdateAttempt | InsertWorker | MoveWorker
    | UpdateWorker | DeleteWorker | Notify | ClearOutbox | Record | EndStream | ForgetDrop
    | InsertTenant | MoveTenant | InsertKey | RotateKey | DeleteKey | InsertRegistration
    | UseRegistration | SetQuota | StoreArtifact
)  # fmt: skip
