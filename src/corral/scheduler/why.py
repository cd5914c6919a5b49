"""Why a queued job is not running, in words a person acts on ("no worker has 2 GPUs
(largest: 1)", "3 workers match, all busy"). Pure, like the matching, and built on the same
rule (``misfit``), so what it says is what the dispatcher does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from corral.model import WorkerStatus, WorkerType
from corral.model.snapshot import WorkerLoad, WorkerSnap
from corral.scheduler.match import JobDemand, WorkerOffer, gpus_for, misfit, offer, room

__all__ = ["Candidate", "Verdict", "explain"]

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class Candidate:
    """A worker of the job's tenant, what its attempts hold, and whether its stream is open
    here."""

    name: str
    worker: WorkerSnap
    load: WorkerLoad
    connected: bool


@dataclass(frozen=True, slots=True)
class Verdict:
    worker_id: str
    name: str
    verdict: str  # "fits now", "busy", "draining", "no: too few GPUs (1 of 2)", …


def explain(
    job: JobDemand,
    candidates: Sequence[Candidate],
    *,
    now: datetime,
    not_before: datetime | None = None,
    ahead: int = 0,
    quota: str | None = None,
) -> tuple[list[str], list[Verdict]]:
    """The reasons, most useful first, and each worker's verdict. ``quota``: the tenant's
    cap that it would pass ("tenant quota of 8 GPUs in use")."""
    reasons: list[str] = [quota] if quota else []
    if not_before is not None and not_before > now:
        reasons.append(f"backoff until {not_before:%H:%M:%S} UTC after a lost attempt")
    if not candidates:
        return [*reasons, "no worker is registered for this tenant"], []
    verdicts, able = [], []
    unable: dict[str, list[WorkerSnap]] = {}
    for c in candidates:
        cap = room(c.worker, WorkerLoad(), free=max(c.worker.slots, 1))
        why = misfit(job, cap)
        if why is not None:
            unable.setdefault(why, []).append(c.worker)
            verdicts.append(Verdict(c.worker.id, c.name, f"cannot: {_lacks(job, cap, why)}"))
            continue
        state = _state(job, c)
        able.append((c, state))
        verdicts.append(Verdict(c.worker.id, c.name, state))
    if not able:
        whole = len(candidates)
        for why, workers in sorted(unable.items(), key=lambda kv: -len(kv[1])):
            if len(workers) == whole:
                reasons.append(_nobody(job, why, workers))
            else:  # "2 of 3 workers: none has 2 GPUs (largest: 1)"
                text = _nobody(job, why, workers).replace(
                    "no worker's labels match", "their labels do not match"
                )
                reasons.append(f"{len(workers)} of {whole} workers: " +
                               text.replace("no worker", "none", 1))  # fmt: skip
        return reasons, verdicts
    free = [c for c, state in able if state == "fits now"]
    if job.nodes > 1 and len(free) < job.nodes:
        more = job.nodes - len(free)
        reasons.append(f"waiting for {more} more worker{'s' * (more != 1)} for a {job.nodes}-node"
                       f" gang ({len(free)} can take a member now)")  # fmt: skip
    elif free:
        names = ", ".join(c.name for c in free[:3]) + (" …" if len(free) > 3 else "")
        line = f"{names} can take it now: it starts with the next dispatch round"
        if ahead:
            line += f" once the {ahead} queued job{'s' * (ahead != 1)} before it have places"
        reasons.append(line)
    elif len(able) == 1:
        c, state = able[0]
        reasons.append(f"worker {c.name} matches but is {state}")
    elif len({state for _, state in able}) == 1:
        reasons.append(f"{len(able)} workers match, all {able[0][1]}")
    else:
        reasons.append(f"{len(able)} workers match: " +
                       ", ".join(f"{c.name} {state}" for c, state in able))  # fmt: skip
    return reasons, verdicts


def _state(job: JobDemand, c: Candidate) -> str:
    """What keeps a worker that could run the job from running it now."""
    w = c.worker
    if w.status is WorkerStatus.OFFLINE or not c.connected:
        return "offline"
    if w.status is WorkerStatus.CONNECTING:
        return "connecting"
    if w.status is WorkerStatus.DRAINING:
        return "draining"
    if w.paused:
        return "paused"
    if w.constrained:
        return f"constrained ({w.constrained})"
    if w.worker_type is WorkerType.EPHEMERAL and w.taken:
        return "done (an ephemeral worker takes one job)"
    now = offer(w, c.load)
    if now is None:
        return "busy"
    why = misfit(job, now)
    if why is None:
        return "fits now"
    return {"slots": "busy", "gpus": "busy (its GPUs are in use)", "cpus": "busy (its cores are"
            " in use)", "memory": "busy (its memory is in use)"}.get(why, "busy")  # fmt: skip


def _gpus_wanted(job: JobDemand) -> str:
    each = []
    if job.gpu_name:
        each.append(f"named {job.gpu_name}")
    if job.gpu_memory_bytes:
        each.append(f"of {job.gpu_memory_bytes / GIB:g} GB")
    plural = "s" * (job.gpus != 1)
    return f"{job.gpus} GPU{plural}" + (f" {' and '.join(each)}" if each else "")


def _qualifying(job: JobDemand, cap: WorkerOffer) -> int:
    """How many of the worker's GPUs would do for the job."""
    return sum(1 for g in cap.free_gpus if gpus_for(_one(job), [g]) is not None)


def _one(job: JobDemand) -> JobDemand:
    return JobDemand(job.id, job.tenant_id, gpus=1, gpu_name=job.gpu_name,
                     gpu_memory_bytes=job.gpu_memory_bytes)  # fmt: skip


def _lacks(job: JobDemand, cap: WorkerOffer, why: str) -> str:
    """What one worker lacks, however idle it were."""
    if why == "gpus":
        return f"{_qualifying(job, cap)} of the {_gpus_wanted(job)} it needs"
    if why == "cpus":
        return f"{cap.free_cpus:g} cores of the {job.cpus:g} it needs"
    if why == "memory":
        return f"{cap.free_memory / GIB:.1f} GB for jobs of the {job.memory_bytes / GIB:g} it needs"
    if why == "accelerator":
        return f"it is {cap.accelerator}, not {job.accelerator}"
    if why == "target":
        return "a local worker, and the job's target is worker" if cap.local else (
            "a remote worker, and the job's target is local")  # fmt: skip
    if why == "labels":
        return "its labels do not match " + _pairs(job.worker_labels)
    if why == "tags":
        return "it lacks the tags " + ",".join(t for t in job.tags if t not in cap.labels)
    return "another tenant's worker"


def _nobody(job: JobDemand, why: str, workers: Sequence[WorkerSnap]) -> str:
    """What no worker has, whatever its load."""
    caps = [room(w, WorkerLoad(), free=max(w.slots, 1)) for w in workers]
    if why == "gpus":
        best = max(_qualifying(job, c) for c in caps)
        return f"no worker has {_gpus_wanted(job)} (largest: {best})"
    if why == "cpus":
        return f"no worker has {job.cpus:g} cores (largest: {max(c.free_cpus for c in caps):g})"
    if why == "memory":
        most = max(c.free_memory for c in caps) / GIB
        return (f"no worker has {job.memory_bytes / GIB:g} GB of memory for jobs (largest:"
                f" {most:.1f})")  # fmt: skip
    if why == "accelerator":
        kinds = ", ".join(sorted({c.accelerator for c in caps}))
        return f"no worker is {job.accelerator} (they are: {kinds})"
    if why == "target":
        return f"no {'local' if job.target == 'local' else 'remote'} worker (target {job.target})"
    if why == "labels":
        return "no worker's labels match " + _pairs(job.worker_labels)
    if why == "tags":
        return "no worker has the tags " + ",".join(job.tags)
    return "no worker of this tenant"


def _pairs(labels: object) -> str:
    return ",".join(f"{k}={v}" for k, v in dict(labels or {}).items())  # type: ignore[call-overload]
