"""What a decision looks at: jobs, attempts and workers as they were read, and the policy.

Built from stored rows (any mapping of column to value), so the core never sees the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from corral.model.job import JobState
from corral.model.worker import WorkerStatus, WorkerType


class Row(Protocol):
    """A stored row: anything that gives a column's value by name."""

    def __getitem__(self, key: str, /) -> Any: ...


def _utc(value: datetime | None) -> datetime | None:
    """Stores may hand back naive datetimes; everything Corral keeps is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class JobSnap:
    id: str
    tenant_id: str
    state: JobState
    attempt: int
    worker_id: str | None
    max_retries: int
    gpus: int = 0
    gang_id: str | None = None  # a gang member's: rank 0's id
    preemptions: int = 0  # attempts stopped for a higher priority: they use no retry
    created_at: datetime | None = None  # its submit
    started_at: datetime | None = None  # its current attempt's start (None: not started)
    # The whole stored job, for what goes on the wire (the assignment); not for deciding.
    row: Row | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, row: Row) -> JobSnap:
        return cls(
            id=row["id"],
            tenant_id=row["tenant_id"],
            state=JobState(row["state"]),
            attempt=row["attempt"],
            worker_id=row["worker_id"],
            max_retries=row["max_retries"],
            gpus=row["gpus"] or 0,
            gang_id=row["gang_id"],
            preemptions=row["preemptions"] or 0,
            created_at=_utc(_optional(row, "created_at")),
            started_at=_utc(_optional(row, "started_at")),
            row=row,
        )


def _optional(row: Row, key: str) -> Any:
    """A column that a partial read may leave out."""
    try:
        return row[key]
    except KeyError:
        return None


@dataclass(frozen=True, slots=True)
class AttemptSnap:
    job_id: str
    number: int
    worker_id: str | None
    outcome: str | None
    assigned_at: datetime
    reported_ns: int | None = None  # its worker's clock at the newest report taken

    @classmethod
    def of(cls, row: Row) -> AttemptSnap:
        at = _utc(row["assigned_at"])
        assert at is not None
        return cls(row["job_id"], row["number"], row["worker_id"], row["outcome"], at,
                   row["reported_ns"])  # fmt: skip


@dataclass(frozen=True, slots=True)
class GpuSnap:
    """One GPU of a worker, as placement sees it."""

    index: int
    name: str = ""
    memory_bytes: int = 0

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> GpuSnap:
        return cls(int(info["index"]), str(info.get("name") or ""),
                   int(info.get("memory_bytes") or 0))  # fmt: skip


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """What a worker's active attempts hold."""

    attempts: int = 0
    gpus: int = 0  # GPUs they asked for
    gpu_ids: frozenset[int] = frozenset()  # those the coordinator gave them
    cpus: float = 0.0
    memory_bytes: int = 0
    preemptible: int = 0  # of them, those a higher priority may stop (or being stopped)


@dataclass(frozen=True, slots=True)
class WorkerSnap:
    id: str
    tenant_id: str
    status: WorkerStatus
    worker_type: WorkerType
    slots: int
    labels: Mapping[str, str]
    gpus: tuple[GpuSnap, ...]  # the GPUs it owns
    taken: int  # jobs handed to it since it registered (an ephemeral worker takes one)
    last_heartbeat: datetime | None
    created_at: datetime | None
    stream_owner: str | None = None
    constrained: str | None = None  # why it takes no new work, as it said
    heard_ns: int | None = None  # its clock at the newest of its requests taken
    prefetch: int = 0  # call tasks it holds beyond its slots, waiting for one
    accelerator: str = "cpu"
    cpu_count: int = 0
    memory_bytes: int = 0
    memory_buffer: float = 0.0  # the share of memory_bytes no job may claim
    paused: bool = False
    address: str | None = None  # where its register came from
    local: bool = False  # a coordinator's own
    shared: bool = False  # an operator's, serving every tenant

    @property
    def memory_for_jobs(self) -> int:
        return int(self.memory_bytes * (1 - self.memory_buffer))

    @classmethod
    def of(cls, row: Row) -> WorkerSnap:
        return cls(
            id=row["id"],
            tenant_id=row["tenant_id"],
            status=WorkerStatus(row["status"]),
            worker_type=WorkerType(row["worker_type"]),
            slots=row["slots"],
            labels=row["labels"],
            gpus=tuple(GpuSnap.of(g) for g in row["gpus"] or []),
            taken=row["taken_since_register"],
            last_heartbeat=_utc(row["last_heartbeat"]),
            created_at=_utc(row["created_at"]),
            stream_owner=row["stream_owner"],
            constrained=row["constrained"],
            heard_ns=row["heard_ns"],
            prefetch=row["prefetch"],
            accelerator=row["accelerator"] or "cpu",
            cpu_count=row["cpu_count"] or 0,
            memory_bytes=row["memory_bytes"] or 0,
            memory_buffer=row["memory_buffer"] or 0.0,
            paused=row["paused_at"] is not None,
            address=row["address"],
            local=bool(row["local"]),
            shared=bool(row["shared"]),
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """The coordinator's settings that decisions depend on."""

    retry_backoff_base_s: float = 1.0
    retry_backoff_cap_s: float = 60.0
    unclaimed_grace_s: float = 30.0
    heartbeat_timeout_s: float = 120.0
