"""``corral jobs why``: the reasons a queued job gives, from tables of fleets (pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from corral.model import WorkerStatus, WorkerType
from corral.model.snapshot import GpuSnap, WorkerLoad, WorkerSnap
from corral.scheduler import Candidate, JobDemand, explain

GIB = 1024**3
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def worker(name, gpus=0, slots=2, labels=None, **more):
    owned = tuple(GpuSnap(i, "NVIDIA A10", 24 * GIB) for i in range(gpus))
    snap = WorkerSnap(name, "t", WorkerStatus.IDLE, WorkerType.PERSISTENT, slots, labels or {},
                      owned, 0, None, None, cpu_count=8, memory_bytes=32 * GIB)  # fmt: skip
    return replace(snap, **more)


def c(snap, load=None, connected=True):
    return Candidate(snap.id, snap, load or WorkerLoad(), connected)


def job(**asks):
    return JobDemand("j", "t", **asks)


def reasons(demand, *candidates, **kw):
    return explain(demand, candidates, now=NOW, **kw)[0]


def test_what_no_worker_has_is_said_with_the_largest_there_is():
    fleet = [c(worker("w1", gpus=1)), c(worker("w2"))]
    assert reasons(job(gpus=2), *fleet) == ["no worker has 2 GPUs (largest: 1)"]
    assert reasons(job(gpus=1, gpu_name="*H100*"), *fleet) == [
        "no worker has 1 GPU named *H100* (largest: 0)"
    ]
    assert reasons(job(cpus=16), *fleet) == ["no worker has 16 cores (largest: 8)"]
    assert reasons(job(accelerator="cuda"), *fleet) == ["no worker is cuda (they are: cpu)"]
    assert reasons(job(tags=("bert",)), *fleet) == ["no worker has the tags bert"]
    assert reasons(job()) == ["no worker is registered for this tenant"]
    # Different workers lacking different things: each said with how many lack it.
    mixed = reasons(job(gpus=1, worker_labels={"zone": "eu"}),
                    c(worker("w1", gpus=1)), c(worker("w2", labels={"zone": "eu"})))  # fmt: skip
    assert sorted(mixed) == ["1 of 2 workers: none has 1 GPU (largest: 0)",
                             "1 of 2 workers: their labels do not match zone=eu"]  # fmt: skip


def test_workers_that_match_say_what_keeps_them():
    busy = WorkerLoad(attempts=2)
    assert reasons(job(), c(worker("w1"), busy), c(worker("w2"), busy), c(worker("w3"), busy)) == [
        "3 workers match, all busy"
    ]
    assert reasons(job(), c(worker("w1", status=WorkerStatus.DRAINING))) == [
        "worker w1 matches but is draining"
    ]
    assert reasons(job(), c(worker("w1", paused=True))) == ["worker w1 matches but is paused"]
    assert reasons(job(), c(worker("w1", constrained="disk full"))) == [
        "worker w1 matches but is constrained (disk full)"
    ]
    assert reasons(job(), c(worker("w1"), connected=False)) == ["worker w1 matches but is offline"]
    in_use = WorkerLoad(attempts=1, gpus=1, gpu_ids=frozenset({0}))
    assert reasons(job(gpus=1), c(worker("w1", gpus=1), in_use)) == [
        "worker w1 matches but is busy (its GPUs are in use)"
    ]
    got = reasons(job(), c(worker("w1"), busy), c(worker("w2", status=WorkerStatus.DRAINING)))
    assert got == ["2 workers match: w1 busy, w2 draining"]


def test_a_job_that_fits_now_waits_for_the_round_and_those_before_it_and_its_backoff():
    later = NOW + timedelta(seconds=70)
    got = reasons(job(), c(worker("w1")), ahead=3, not_before=later)
    assert got == ["backoff until 12:01:10 UTC after a lost attempt",
                   "w1 can take it now: it starts with the next dispatch round once the 3"
                   " queued jobs before it have places"]  # fmt: skip
    _, verdicts = explain(job(gpus=2), [c(worker("w1", gpus=1)), c(worker("w2", gpus=2))], now=NOW)
    assert [(v.name, v.verdict) for v in verdicts] == [
        ("w1", "cannot: 1 of the 2 GPUs it needs"),
        ("w2", "fits now"),
    ]


def test_a_gang_says_how_many_more_workers_it_waits_for():
    member = job(gang_id="g", nodes=4)
    got = reasons(member, c(worker("w1")), c(worker("w2")), c(worker("w3"), WorkerLoad(2)))
    assert got == ["waiting for 2 more workers for a 4-node gang (2 can take a member now)"]
