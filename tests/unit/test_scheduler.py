from __future__ import annotations

from corral.scheduler import JobDemand, WorkerOffer, labels_match, plan


def w(id, free=1, labels=None, gpus=0, tenant="t"):
    return WorkerOffer(id=id, tenant_id=tenant, labels=labels or {}, free_slots=free,
                       free_gpus=gpus)  # fmt: skip


def j(id, labels=None, gpus=0, priority=0, tenant="t"):
    return JobDemand(id=id, tenant_id=tenant, priority=priority, gpus=gpus,
                     worker_labels=labels or {})  # fmt: skip


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
