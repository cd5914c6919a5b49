"""Greedy placement: jobs in priority order, each to the least-loaded worker that fits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase


@dataclass(frozen=True, slots=True)
class JobDemand:
    id: str
    tenant_id: str
    priority: int = 0
    gpus: int = 0
    worker_labels: Mapping[str, str] = ()  # type: ignore[assignment]  # label -> glob


@dataclass(frozen=True, slots=True)
class WorkerOffer:
    id: str
    tenant_id: str
    labels: Mapping[str, str]
    free_slots: int
    free_gpus: int = 0


@dataclass(frozen=True, slots=True)
class Assignment:
    job_id: str
    worker_id: str


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every selector key must be a label of the worker whose value matches the glob."""
    return all(k in labels and fnmatchcase(labels[k], glob) for k, glob in selector.items())


def plan(jobs: Sequence[JobDemand], workers: Sequence[WorkerOffer]) -> list[Assignment]:
    """Assign as many jobs as fit. ``jobs`` must already be in claim order
    (priority, then age); a job that fits nowhere does not block those behind it."""
    slots = {w.id: w.free_slots for w in workers}
    gpus = {w.id: w.free_gpus for w in workers}
    out: list[Assignment] = []
    for job in sorted(jobs, key=lambda j: -j.priority):  # stable: keeps age order
        best: WorkerOffer | None = None
        for w in workers:
            if slots[w.id] <= 0 or gpus[w.id] < job.gpus or w.tenant_id != job.tenant_id:
                continue
            if not labels_match(job.worker_labels or {}, w.labels):
                continue
            if best is None or slots[w.id] > slots[best.id]:
                best = w
        if best is not None:
            slots[best.id] -= 1
            gpus[best.id] -= job.gpus
            out.append(Assignment(job.id, best.id))
        if not any(v > 0 for v in slots.values()):
            break
    return out
