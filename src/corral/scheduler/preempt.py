"""Which preemptible attempts a higher-priority job that fits nowhere may stop. Pure.

A job that fits no worker now may have lower-priority attempts stopped for it, if they are
preemptible and stopping them on one worker would make it fit there: on the worker that
needs the fewest stopped (the lowest priorities first, the youngest of a priority first).
The job does not take their place in the same round: they stop first (SIGTERM, a grace to
checkpoint, SIGKILL), holding what they hold until then, and the job, first in claim order
among the lower priorities, is placed when it fits. Attempts already being stopped count
as free for this: a job waiting on them stops no more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from corral.model.snapshot import GpuSnap
from corral.scheduler.match import JobDemand, WorkerOffer, fits, misfit

__all__ = ["Victim", "preemptions"]


@dataclass(frozen=True, slots=True)
class Victim:
    """An active attempt a higher priority may stop, or one being stopped."""

    job_id: str
    worker_id: str
    priority: int
    gpu_ids: tuple[int, ...] = ()
    cpus: float = 0.0
    memory_bytes: int = 0
    stopping: bool = False  # already told to stop
    age: float = 0.0  # seconds since it was submitted: the youngest goes first


def _freed(room: WorkerOffer, gone: Iterable[Victim], gpus: Mapping[int, GpuSnap]) -> WorkerOffer:
    """What ``room`` would be once ``gone`` have stopped."""
    out = room
    for v in gone:
        back = tuple(gpus[i] for i in v.gpu_ids if i in gpus)
        out = replace(out, free_slots=out.free_slots + 1, free_gpus=(*out.free_gpus, *back),
                      free_cpus=out.free_cpus + v.cpus,
                      free_memory=out.free_memory + v.memory_bytes)  # fmt: skip
    return out


def preemptions(
    waiting: Sequence[JobDemand],
    rooms: Mapping[str, WorkerOffer],
    capacity: Mapping[str, WorkerOffer],
    victims: Sequence[Victim],
) -> list[tuple[str, str]]:
    """``(victim job id, the job it is stopped for)`` pairs, for the ``waiting`` jobs in
    claim order that fit nowhere now. ``rooms``: what each idle worker has free now (slots
    may be zero or below); ``capacity``: what it has when empty, with every GPU it owns."""
    by_worker: dict[str, list[Victim]] = {}
    for v in victims:
        by_worker.setdefault(v.worker_id, []).append(v)
    promised: set[str] = set()  # stopping for a job before this one in the round
    out: list[tuple[str, str]] = []
    for job in sorted(waiting, key=lambda j: -j.priority):  # stable: keeps age order
        if job.gang_id is not None:
            continue  # a gang is not placed by stopping others (it needs several at once)
        best: tuple[str, list[Victim]] | None = None
        waits = False
        for wid, cap in capacity.items():
            room = rooms.get(wid)
            if room is None or misfit(job, replace(cap, free_slots=max(cap.free_slots, 1))):
                continue  # it could not run there even empty
            gpus = {g.index: g for g in cap.free_gpus}
            mine = by_worker.get(wid, [])
            going = [v for v in mine if v.stopping and v.job_id not in promised]
            trial = _freed(room, going, gpus)
            if fits(job, trial) is not None:  # it waits for what is already being stopped
                promised.update(v.job_id for v in going)
                waits = True
                break
            stoppable = sorted((v for v in mine if not v.stopping and v.priority < job.priority),
                               key=lambda v: (v.priority, v.age))  # fmt: skip
            chosen: list[Victim] = []
            for v in stoppable:
                chosen.append(v)
                trial = _freed(trial, [v], gpus)
                if fits(job, trial) is not None:
                    if best is None or len(chosen) < len(best[1]):
                        best = (wid, list(chosen))
                    break
        if waits or best is None:
            continue
        wid, chosen = best
        out += [(v.job_id, job.id) for v in chosen]
        going_too = {v.job_id for v in by_worker[wid] if v.stopping}
        promised.update(going_too | {v.job_id for v in chosen})
        by_worker[wid] = [replace(v, stopping=True) if v in chosen else v
                          for v in by_worker[wid]]  # fmt: skip
    return out
