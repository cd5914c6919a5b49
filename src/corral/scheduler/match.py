"""Greedy placement: jobs in priority order, each to the least-loaded worker that fits.

``fits`` is the one rule for "may job j go to worker w now"; ``plan`` places a queue with it
and ``still_fitting`` checks a plan against fresher offers with it.

A worker may hold a few small tasks beyond its slots (``prefetch``), waiting on it for a
slot, so that the next one starts the moment one ends instead of a round trip later. Only
a job that says it may wait there (``JobDemand.queueable``: a call, asking no GPU) counts
against that room: its slots then go below zero, down to minus the prefetch.
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
    queueable: bool = False  # may wait on a busy worker for a slot (see ``prefetch``)


@dataclass(frozen=True, slots=True)
class WorkerOffer:
    id: str
    tenant_id: str
    labels: Mapping[str, str]
    free_slots: int  # below zero when it holds prefetched tasks
    free_gpus: int = 0
    prefetch: int = 0  # queueable jobs it holds beyond its slots

    def room(self, slots: int) -> bool:
        """With ``slots`` left, may it take any job?"""
        return slots > -self.prefetch


@dataclass(frozen=True, slots=True)
class Assignment:
    job_id: str
    worker_id: str


def offer(worker: WorkerSnap, held: int, gpus_held: int) -> WorkerOffer | None:
    """What a worker can take now, given the attempts and GPUs it holds; None for nothing.

    Only a connected, idle worker takes work (not one draining, or constrained: it said it
    cannot); an ephemeral one takes a single job per registration, and prefetches none."""
    if worker.status is not WorkerStatus.IDLE or worker.constrained:
        return None
    free, prefetch = worker.slots - held, worker.prefetch
    if worker.worker_type is WorkerType.EPHEMERAL:
        free, prefetch = min(free, 1 - worker.taken), 0
    if free <= -prefetch:
        return None
    return WorkerOffer(worker.id, worker.tenant_id, worker.labels, free, worker.gpus - gpus_held,
                       prefetch)  # fmt: skip


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every selector key must be a label of the worker whose value matches the glob."""
    return all(k in labels and fnmatchcase(labels[k], glob) for k, glob in selector.items())


def fits(job: JobDemand, worker: WorkerOffer, slots: int, gpus: int) -> bool:
    """May ``job`` go to ``worker``, which has ``slots`` and ``gpus`` left?"""
    return (
        slots > (-worker.prefetch if job.queueable else 0)
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
        if not any(w.room(room[w.id][0]) for w in workers):
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
        if o.room(o.free_slots - n):
            left.append(replace(o, free_slots=o.free_slots - n, free_gpus=o.free_gpus - g))
    return left
