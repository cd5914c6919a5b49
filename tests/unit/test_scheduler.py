from __future__ import annotations

from dataclasses import replace

from corral.model import WorkerStatus, WorkerType
from corral.model.snapshot import WorkerSnap
from corral.scheduler import (
    Assignment,
    JobDemand,
    WorkerOffer,
    labels_match,
    left_over,
    offer,
    plan,
)


def w(id, free=1, labels=None, gpus=0, tenant="t", prefetch=0):
    return WorkerOffer(id=id, tenant_id=tenant, labels=labels or {}, free_slots=free,
                       free_gpus=gpus, prefetch=prefetch)  # fmt: skip


def j(id, labels=None, gpus=0, priority=0, tenant="t", queueable=False):
    return JobDemand(id=id, tenant_id=tenant, priority=priority, gpus=gpus,
                     worker_labels=labels or {}, queueable=queueable)  # fmt: skip


def test_globs_match_label_values():
    assert labels_match({"gpu": "a100*"}, {"gpu": "a100-80g"})
    assert not labels_match({"gpu": "a100*"}, {"gpu": "h100"})
    assert not labels_match({"gpu": "*"}, {})
    assert labels_match({}, {"anything": "x"})


def test_label_routes_only_to_matching_worker():
    got = plan([j("a", {"team": "nlp"})], [w("w1", labels={"team": "cv"}),
                                            w("w2", labels={"team": "nlp"})])  # fmt: skip
    assert [(a.job_id, a.worker_id) for a in got] == [("a", "w2")]


def test_priority_first_and_unplaceable_jobs_do_not_block():
    jobs = [j("low"), j("gpu", gpus=2, priority=9), j("high", priority=5)]
    got = plan(jobs, [w("w1", free=1, gpus=1)])
    assert [a.job_id for a in got] == ["high"]


def test_slots_and_gpus_are_counted():
    got = plan([j("a", gpus=1), j("b", gpus=1), j("c", gpus=1)], [w("w1", free=3, gpus=2)])
    assert [a.job_id for a in got] == ["a", "b"]


def test_spreads_over_least_loaded_and_respects_tenants():
    got = plan([j("a"), j("b"), j("x", tenant="other")], [w("w1", free=2), w("w2", free=2)])
    assert sorted(a.worker_id for a in got) == ["w1", "w2"]
    assert "x" not in {a.job_id for a in got}


def test_a_busy_worker_takes_queueable_jobs_up_to_its_prefetch_and_idle_ones_first():
    calls = [j(f"c{i}", queueable=True) for i in range(6)]
    # The idle worker's slots fill first; then each worker's prefetch, most room first.
    got = plan(calls, [w("busy", free=0, prefetch=2), w("idle", free=2, prefetch=1)])
    assert [a.worker_id for a in got] == ["idle", "idle", "busy", "idle", "busy"]
    # A command (not queueable) never waits on a busy worker, even with prefetch room.
    assert plan([j("cmd"), *calls[:1]], [w("busy", free=0, prefetch=2)]) == [
        Assignment("c0", "busy")
    ]
    # Room held by prefetched calls is no slot for a command.
    assert plan([j("cmd")], [w("full", free=-1, prefetch=2)]) == []
    assert left_over([w("x", free=1, prefetch=1)], [Assignment("c0", "x")],
                     {"c0": calls[0]}) == [w("x", free=0, prefetch=1)]  # fmt: skip


def test_an_offer_counts_prefetch_but_an_ephemeral_worker_prefetches_nothing():
    snap = WorkerSnap("w1", "t", WorkerStatus.IDLE, WorkerType.PERSISTENT, 2, {}, 0, 0, None,
                      None, prefetch=2)  # fmt: skip
    held = offer(snap, 3, 0)
    assert held is not None and (held.free_slots, held.prefetch) == (-1, 2)
    assert offer(snap, 4, 0) is None
    eph = replace(snap, worker_type=WorkerType.EPHEMERAL)
    assert offer(eph, 1, 0) is not None and offer(eph, 2, 0) is None
