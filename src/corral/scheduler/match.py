"""Greedy placement: jobs in priority order, each to the least-loaded worker that fits.

``fits`` is the one rule for "may job j go to worker w now"; ``plan`` places a queue with it
and ``still_fitting`` checks a plan against fresher offers with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from corral.model import WorkerStatus, WorkerType
from corral.model.snapshot import WorkerSnap


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


def offer(worker: WorkerSnap, held: int, gpus_held: int) -> WorkerOffer | None:
    """What a worker can take now, given the attempts and GPUs it holds; None for nothing.

    Only a connected, idle worker takes work (not one draining, or constrained: it said it
    cannot); an ephemeral one takes a single job per registration."""
    if worker.status is not WorkerStatus.IDLE or worker.constrained:
        return None
    free = worker.slots - held
    if worker.worker_type is WorkerType.EPHEMERAL:
        free = min(free, 1 - worker.taken)
    if free <= 0:
        return None
    return WorkerOffer(worker.id, worker.tenant_id, worker.labels, free, worker.gpus - gpus_held)


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every selector key must be a label of the worker whose value matches the glob."""
    return all(k in labels and fnmatchcase(labels[k], glob) for k, glob in selector.items())


def fits(job: JobDemand, worker: WorkerOffer, slots: int, gpus: int) -> bool:
    """May ``job`` go to ``worker``, which has ``slots`` and ``gpus`` left?"""
    return (
        slots > 0
        and gpus >= job.gpus
        and worker.tenant_id == job.tenant_id
        and labels_match(job.worker_labels or {}, worker.labels)
    )


def plan(jobs: Sequence[JobDemand], workers: Sequence[WorkerOffer]) -> list[Assignment]:
    """Assign as many jobs as fit. ``jobs`` must already be in claim order
    (priority, then age); a job that fits nowhere does not block those behind it."""
    room = {w.id: [w.free_slots, w.free_gpus] for w in workers}
    out: list[Assignment] = []
    for job in sorted(jobs, key=lambda j: -j.priority):  # stable: keeps age order
        best: WorkerOffer | None = None
        for w in workers:
            if fits(job, w, *room[w.id]) and (best is None or room[w.id][0] > room[best.id][0]):
                best = w
        if best is not None:
            room[best.id][0] -= 1
            room[best.id][1] -= job.gpus
            out.append(Assignment(job.id, best.id))
        if not any(r[0] > 0 for r in room.values()):
            break
    return out


def still_fitting(
    chosen: Iterable[Assignment], demands: Mapping[str, JobDemand], offers: Sequence[WorkerOffer]
) -> list[Assignment]:
    """The assignments, in order, that fresher ``offers`` still hold."""
    by_id = {o.id: o for o in offers}
    room = {o.id: [o.free_slots, o.free_gpus] for o in offers}
    kept = []
    for a in chosen:
        w, job = by_id.get(a.worker_id), demands[a.job_id]
        if w is not None and fits(job, w, *room[w.id]):
            room[w.id][0] -= 1
            room[w.id][1] -= job.gpus
            kept.append(a)
    return kept


def left_over(
    offers: Sequence[WorkerOffer], placed: Iterable[Assignment], demands: Mapping[str, JobDemand]
) -> list[WorkerOffer]:
    """What the offers still have once ``placed`` is taken from them."""
    used: dict[str, tuple[int, int]] = {}
    for a in placed:
        n, g = used.get(a.worker_id, (0, 0))
        used[a.worker_id] = (n + 1, g + demands[a.job_id].gpus)
    left = []
    for o in offers:
        n, g = used.get(o.id, (0, 0))
        if o.free_slots - n > 0:
            left.append(replace(o, free_slots=o.free_slots - n, free_gpus=o.free_gpus - g))
    return left
