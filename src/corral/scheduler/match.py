"""Greedy placement: jobs in priority order, each to the least-loaded worker that fits.

``fits`` is the one rule for "may job j go to worker w now": it answers with the GPUs the
job would hold there, so GPUs are handed out by index, never only counted. ``plan`` places
a queue with it, ``still_fitting`` checks a plan against fresher offers with it, and
``taken`` is what an offer has left once a job is placed on it.

A worker may hold a few small tasks beyond its slots (``prefetch``), waiting on it for a
slot, so that the next one starts the moment one ends instead of a round trip later. Only
a job that says it may wait there (``JobDemand.queueable``: a call, asking no GPU) counts
against that room: its slots then go below zero, down to minus the prefetch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase

from corral.model import WorkerStatus, WorkerType
from corral.model.snapshot import GpuSnap, WorkerLoad, WorkerSnap

# Cores are counted as floats (a job may ask for half of one): sums may miss by a rounding.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class JobDemand:
    id: str
    tenant_id: str
    priority: int = 0
    gpus: int = 0
    worker_labels: Mapping[str, str] = ()  # type: ignore[assignment]  # label -> glob
    queueable: bool = False  # may wait on a busy worker for a slot (see ``prefetch``)
    tags: tuple[str, ...] = ()  # labels the worker must have, whatever their value
    accelerator: str | None = None  # cpu, cuda, rocm or mps
    gpu_name: str | None = None  # glob each of its GPUs' names must match
    gpu_memory_bytes: int = 0  # each of its GPUs at least
    target: str = "auto"  # worker: remote ones only; local: the coordinator's own; auto: both
    cpus: float = 0.0
    memory_bytes: int = 0
    waited_s: float = 0.0  # since it was submitted
    gang_id: str | None = None  # a gang member's: placed with all its gang or not at all
    nodes: int = 1
    rank: int = 0


@dataclass(frozen=True, slots=True)
class WorkerOffer:
    id: str
    tenant_id: str
    labels: Mapping[str, str]
    free_slots: int  # below zero when it holds prefetched tasks
    free_gpus: tuple[GpuSnap, ...] = ()
    prefetch: int = 0  # queueable jobs it holds beyond its slots
    accelerator: str = "cpu"
    free_cpus: float = float("inf")
    free_memory: int = 2**62
    local: bool = False  # a coordinator's own worker
    shared: bool = False  # an operator's: it serves every tenant

    def room(self, slots: int) -> bool:
        """With ``slots`` left, may it take any job?"""
        return slots > -self.prefetch


@dataclass
class Budget:
    """What one dispatch round may still hand out, kept across its pages (``plan`` spends
    it): each capped tenant's running jobs and GPUs left under its quota, and the workers
    held for a job that has waited too long (see ``plan``)."""

    jobs_left: dict[str, int] = field(default_factory=dict)  # tenant -> jobs it may start
    gpus_left: dict[str, int] = field(default_factory=dict)  # tenant -> GPUs it may take
    # What each worker has with nothing running: where a job that waits could ever fit.
    # Given, or made from ``workers`` when first asked (most rounds never ask).
    given_capacity: Mapping[str, WorkerOffer] | None = None
    workers: Sequence[WorkerSnap] = ()
    reserve_after_s: float | None = None  # a job that waited this long holds a worker
    reserved: dict[str, str] = field(default_factory=dict)  # worker id -> the job it waits for
    # What each tenant runs, for fair share on shared workers; None: one tenant, or none
    # shared, so claim order alone.
    running: dict[str, int] | None = None

    @property
    def capacity(self) -> Mapping[str, WorkerOffer]:
        if self.given_capacity is None:
            self.given_capacity = {w.id: cap for w in self.workers
                                   if (cap := offer(w)) is not None}  # fmt: skip
        return self.given_capacity

    def allows(self, job: JobDemand) -> bool:
        """Within its tenant's quota?"""
        jobs, gpus = self.jobs_left.get(job.tenant_id), self.gpus_left.get(job.tenant_id)
        return (jobs is None or jobs > 0) and (gpus is None or job.gpus <= gpus)

    def allows_all(self, jobs: Sequence[JobDemand]) -> bool:
        """Within its tenant's quota, all of them together (a gang)?"""
        tenant = jobs[0].tenant_id
        left, gpus = self.jobs_left.get(tenant), self.gpus_left.get(tenant)
        return (left is None or left >= len(jobs)) and (
            gpus is None or sum(j.gpus for j in jobs) <= gpus
        )

    def spend(self, job: JobDemand) -> None:
        if job.tenant_id in self.jobs_left:
            self.jobs_left[job.tenant_id] -= 1
        if job.tenant_id in self.gpus_left:
            self.gpus_left[job.tenant_id] -= job.gpus

    def reserve(self, job: JobDemand, now: Mapping[str, WorkerOffer]) -> None:
        """A job that fits nowhere now and has waited past ``reserve_after_s`` holds the
        worker it could fit on that is closest to free (most free GPUs, then slots): no job
        after it in claim order is placed there until it has been."""
        if self.reserve_after_s is None or job.waited_s < self.reserve_after_s:
            return
        if job.id in self.reserved.values():
            return
        able = [cap for wid, cap in self.capacity.items()
                if wid not in self.reserved and misfit(job, cap) is None]  # fmt: skip
        if able:

            def closeness(cap: WorkerOffer) -> tuple[int, int]:
                w = now.get(cap.id)
                return (len(w.free_gpus), w.free_slots) if w is not None else (-1, -1)

            self.reserved[max(able, key=closeness).id] = job.id


@dataclass(frozen=True, slots=True)
class Assignment:
    job_id: str
    worker_id: str
    gpu_ids: tuple[int, ...] = ()


def offer(worker: WorkerSnap, load: WorkerLoad | None = None) -> WorkerOffer | None:
    """What a worker can take now, given what its active attempts hold; None for nothing.

    Only a connected, idle worker takes work (not one draining, paused, or constrained: it
    said it cannot); an ephemeral one takes a single job per registration, and prefetches
    none."""
    if worker.status is not WorkerStatus.IDLE or worker.constrained or worker.paused:
        return None
    load = load or WorkerLoad()
    free, prefetch = worker.slots - load.attempts, worker.prefetch
    if worker.worker_type is WorkerType.EPHEMERAL:
        free, prefetch = min(free, 1 - worker.taken), 0
    if free <= -prefetch:
        return None
    return room(worker, load, free, prefetch)


def room(
    worker: WorkerSnap, load: WorkerLoad | None = None, free: int | None = None, prefetch: int = 0
) -> WorkerOffer:
    """What ``worker`` has beyond ``load``, whatever its state: with no load, all it has."""
    load = load or WorkerLoad()
    free = worker.slots - load.attempts if free is None else free
    gpus = [g for g in worker.gpus if g.index not in load.gpu_ids]
    # Attempts that hold GPUs by count alone (handed out before GPUs had indices here).
    del gpus[: max(0, load.gpus - len(load.gpu_ids))]
    cpus = worker.cpu_count - load.cpus if worker.cpu_count else float("inf")
    memory = worker.memory_for_jobs - load.memory_bytes if worker.memory_bytes else 2**62
    return WorkerOffer(worker.id, worker.tenant_id, worker.labels, free, tuple(gpus), prefetch,
                       worker.accelerator, cpus, memory, worker.local,
                       worker.shared)  # fmt: skip


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Every selector key must be a label of the worker whose value matches the glob."""
    return all(k in labels and fnmatchcase(labels[k], glob) for k, glob in selector.items())


def gpus_for(job: JobDemand, free: Sequence[GpuSnap]) -> tuple[int, ...] | None:
    """The GPUs ``job`` would hold out of ``free``, or None if too few of them qualify.
    Of those that qualify, the smallest first (then the lowest index): a large GPU stays
    for a job that needs it."""
    if not job.gpus:
        return ()
    ok = [
        g
        for g in free
        if g.memory_bytes >= job.gpu_memory_bytes
        and (job.gpu_name is None or fnmatchcase(g.name.lower(), job.gpu_name.lower()))
    ]
    if len(ok) < job.gpus:
        return None
    ok.sort(key=lambda g: (g.memory_bytes, g.index))
    return tuple(sorted(g.index for g in ok[: job.gpus]))


def _misfit_but_gpus(job: JobDemand, worker: WorkerOffer) -> str | None:
    """``misfit`` but for the GPUs, which ``fits`` chooses as it checks them."""
    if worker.free_slots <= (-worker.prefetch if job.queueable else 0):
        return "slots"
    if worker.tenant_id != job.tenant_id and not worker.shared:
        return "tenant"
    if job.target != "auto" and (job.target == "local") != worker.local:
        return "target"
    if job.accelerator is not None and job.accelerator != worker.accelerator:
        return "accelerator"
    if job.cpus > worker.free_cpus + _EPSILON:
        return "cpus"
    if job.memory_bytes > worker.free_memory:
        return "memory"
    if not labels_match(job.worker_labels or {}, worker.labels):
        return "labels"
    if not all(tag in worker.labels for tag in job.tags):
        return "tags"
    return None


def misfit(job: JobDemand, worker: WorkerOffer) -> str | None:
    """The first of ``job``'s needs that ``worker`` as it is now does not meet (``slots``,
    ``tenant``, ``target``, ``accelerator``, ``cpus``, ``memory``, ``labels``, ``tags``,
    ``gpus``), or None: it fits. ``fits`` and ``corral jobs why`` both ask this, so they
    never disagree."""
    why = _misfit_but_gpus(job, worker)
    if why is None and gpus_for(job, worker.free_gpus) is None:
        return "gpus"
    return why


def fits(job: JobDemand, worker: WorkerOffer) -> tuple[int, ...] | None:
    """May ``job`` go to ``worker`` as it is now? The GPUs it would hold there (``()`` for
    none asked), or None when it may not."""
    if _misfit_but_gpus(job, worker) is not None:
        return None
    return gpus_for(job, worker.free_gpus)


def taken(worker: WorkerOffer, job: JobDemand, gpu_ids: Iterable[int]) -> WorkerOffer:
    """What ``worker`` has left once ``job`` holds ``gpu_ids`` there."""
    held = set(gpu_ids)
    return replace(worker, free_slots=worker.free_slots - 1,
                   free_gpus=tuple(g for g in worker.free_gpus if g.index not in held),
                   free_cpus=worker.free_cpus - job.cpus,
                   free_memory=worker.free_memory - job.memory_bytes)  # fmt: skip


def plan(
    jobs: Sequence[JobDemand], workers: Sequence[WorkerOffer], budget: Budget | None = None
) -> list[Assignment]:
    """Assign as many jobs as fit. ``jobs`` must already be in claim order
    (priority, then age); a job that fits nowhere does not block those behind it, unless it
    has waited past the budget's ``reserve_after_s``: then it holds one worker it could fit
    on, and only jobs before it go there, so a stream of small jobs cannot starve a large
    one. A job past its tenant's quota waits and holds nothing."""
    budget = budget or Budget()
    now = {w.id: w for w in workers}
    out: list[Assignment] = []
    ordered = sorted(jobs, key=lambda j: -j.priority)  # stable: keeps age order
    if budget.running is not None and len({j.tenant_id for j in ordered}) > 1:
        ordered = fair(ordered, budget.running)
    gangs: dict[str, list[JobDemand]] = {}
    for job in ordered:
        if job.gang_id is not None:
            gangs.setdefault(job.gang_id, []).append(job)
    for job in ordered:
        if job.gang_id is not None:  # its whole gang, at its first member
            members = gangs.pop(job.gang_id, None)
            if members and len(members) == job.nodes and budget.allows_all(members):
                placed = _gang(members, now, budget)
                if placed is not None:
                    now, given = placed
                    out += given
                    for m in members:
                        budget.spend(m)
            continue
        if not budget.allows(job):
            continue
        best: tuple[WorkerOffer, tuple[int, ...]] | None = None
        for w in now.values():
            held_for = budget.reserved.get(w.id)
            if held_for is not None and held_for != job.id:
                continue
            gpus = fits(job, w)
            if gpus is not None and (best is None or _better(w, best[0])):
                best = (w, gpus)
        if best is None:
            budget.reserve(job, now)
        else:
            now[best[0].id] = taken(best[0], job, best[1])
            out.append(Assignment(job.id, best[0].id, best[1]))
            budget.spend(job)
            if budget.reserved.get(best[0].id) == job.id:
                del budget.reserved[best[0].id]
        if not any(w.room(w.free_slots) and w.id not in budget.reserved for w in now.values()):
            break
    return out


def fair(jobs: Sequence[JobDemand], running: Mapping[str, int]) -> list[JobDemand]:
    """``jobs`` (in claim order) with the tenants of each priority taking turns: next, the
    oldest job of the tenant that runs the fewest, counting those before it here. Within a
    tenant, its own claim order."""
    out: list[JobDemand] = []
    counts = dict(running)
    i = 0
    while i < len(jobs):
        level = jobs[i].priority
        queues: dict[str, list[JobDemand]] = {}
        while i < len(jobs) and jobs[i].priority == level:
            queues.setdefault(jobs[i].tenant_id, []).append(jobs[i])
            i += 1
        heads = dict.fromkeys(queues, 0)
        while heads:
            tenant = min(heads, key=lambda t: counts.get(t, 0))  # ties: the first seen
            out.append(queues[tenant][heads[tenant]])
            counts[tenant] = counts.get(tenant, 0) + 1
            heads[tenant] += 1
            if heads[tenant] == len(queues[tenant]):
                del heads[tenant]
    return out


def _better(w: WorkerOffer, than: WorkerOffer) -> bool:
    """Where a job goes of two that fit: a remote worker before a coordinator's own (target
    "auto" falls back to those), then the one with more free slots."""
    return (not w.local, w.free_slots) > (not than.local, than.free_slots)


def _gang(
    members: Sequence[JobDemand], now: Mapping[str, WorkerOffer], budget: Budget
) -> tuple[dict[str, WorkerOffer], list[Assignment]] | None:
    """All of a gang's members on workers of their own, or None (nothing is held: two
    gangs waiting for the same workers can never hold half each)."""
    trial, out, used = dict(now), [], set()
    for m in sorted(members, key=lambda j: j.rank):
        best: tuple[WorkerOffer, tuple[int, ...]] | None = None
        for w in trial.values():
            if w.id in used or w.id in budget.reserved:
                continue
            gpus = fits(m, w)
            if gpus is not None and (best is None or _better(w, best[0])):
                best = (w, gpus)
        if best is None:
            return None
        trial[best[0].id] = taken(best[0], m, best[1])
        used.add(best[0].id)
        out.append(Assignment(m.id, best[0].id, best[1]))
    return trial, out


def still_fitting(
    chosen: Iterable[Assignment], demands: Mapping[str, JobDemand], offers: Sequence[WorkerOffer]
) -> list[Assignment]:
    """The assignments, in order, that fresher ``offers`` still hold, each on its worker and
    with the GPUs it was given (a GPU taken meanwhile drops the assignment, not moves it)."""
    now = {o.id: o for o in offers}
    kept = []
    for a in chosen:
        w, job = now.get(a.worker_id), demands[a.job_id]
        if w is None or fits(job, w) is None:
            continue
        free = {g.index for g in w.free_gpus}
        if not free.issuperset(a.gpu_ids):
            continue
        now[w.id] = taken(w, job, a.gpu_ids)
        kept.append(a)
    # A gang goes whole or not at all.
    whole: dict[str, int] = {}
    for a in kept:
        if (g := demands[a.job_id].gang_id) is not None:
            whole[g] = whole.get(g, 0) + 1
    return [a for a in kept if (g := demands[a.job_id].gang_id) is None
            or whole[g] == demands[a.job_id].nodes]  # fmt: skip


def left_over(
    offers: Sequence[WorkerOffer], placed: Iterable[Assignment], demands: Mapping[str, JobDemand]
) -> list[WorkerOffer]:
    """What the offers still have once ``placed`` is taken from them."""
    now = {o.id: o for o in offers}
    for a in placed:
        now[a.worker_id] = taken(now[a.worker_id], demands[a.job_id], a.gpu_ids)
    return [o for o in now.values() if o.room(o.free_slots)]
