from __future__ import annotations

from dataclasses import replace

from corral.model import WorkerStatus, WorkerType
from corral.model.snapshot import GpuSnap, WorkerLoad, WorkerSnap
from corral.scheduler import (
    Assignment,
    Budget,
    JobDemand,
    Victim,
    WorkerOffer,
    labels_match,
    left_over,
    offer,
    plan,
    preemptions,
    still_fitting,
)

GIB = 1024**3


def w(id, free=1, labels=None, gpus=0, tenant="t", prefetch=0, **more):
    """An offer; ``gpus``: a count of 16 GB GPUs, or the GpuSnaps themselves."""
    owned = tuple(GpuSnap(i, "NVIDIA A10", 16 * GIB) for i in range(gpus)) if isinstance(
        gpus, int) else tuple(gpus)  # fmt: skip
    return WorkerOffer(id=id, tenant_id=tenant, labels=labels or {}, free_slots=free,
                       free_gpus=owned, prefetch=prefetch, **more)  # fmt: skip


def j(id, labels=None, gpus=0, priority=0, tenant="t", queueable=False, **more):
    return JobDemand(id=id, tenant_id=tenant, priority=priority, gpus=gpus,
                     worker_labels=labels or {}, queueable=queueable, **more)  # fmt: skip


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
    snap = WorkerSnap("w1", "t", WorkerStatus.IDLE, WorkerType.PERSISTENT, 2, {}, (), 0, None,
                      None, prefetch=2)  # fmt: skip
    held = offer(snap, WorkerLoad(3))
    assert held is not None and (held.free_slots, held.prefetch) == (-1, 2)
    assert offer(snap, WorkerLoad(4)) is None
    eph = replace(snap, worker_type=WorkerType.EPHEMERAL)
    assert offer(eph, WorkerLoad(1)) is not None and offer(eph, WorkerLoad(2)) is None


def snap(gpus=(), slots=4, cpus=8, memory_gb=32, buffer=0.0, **more):
    return WorkerSnap("w1", "t", WorkerStatus.IDLE, WorkerType.PERSISTENT, slots, {}, tuple(gpus),
                      0, None, None, cpu_count=cpus, memory_bytes=memory_gb * GIB,
                      memory_buffer=buffer, **more)  # fmt: skip


def test_gpus_are_handed_out_by_index_and_never_twice():
    got = plan([j("a", gpus=1), j("b", gpus=2), j("c", gpus=1)], [w("w1", free=4, gpus=3)])
    assert [(a.job_id, a.gpu_ids) for a in got] == [("a", (0,)), ("b", (1, 2))]
    # What attempts already hold is not offered again; nor is one held by count alone.
    four = [GpuSnap(i, "NVIDIA A10", 16 * GIB) for i in range(4)]
    left = offer(snap(four), WorkerLoad(attempts=2, gpus=3, gpu_ids=frozenset({1, 2})))
    assert left is not None and [g.index for g in left.free_gpus] == [3]


def test_gpu_name_and_memory_choose_which_gpus_and_the_smallest_that_fits_goes_first():
    mixed = [GpuSnap(0, "NVIDIA A100-SXM4-80GB", 80 * GIB), GpuSnap(1, "NVIDIA A10", 24 * GIB),
             GpuSnap(2, "NVIDIA A100-PCIE-40GB", 40 * GIB)]  # fmt: skip
    cases = [  # (job, the GPUs it gets, or None: it fits nowhere)
        (j("any", gpus=1), (1,)),
        (j("a100", gpus=1, gpu_name="*a100*"), (2,)),  # case-blind glob; 40 GB before 80
        (j("big", gpus=1, gpu_memory_bytes=50 * GIB), (0,)),
        (j("two-a100", gpus=2, gpu_name="*A100*"), (0, 2)),
        (j("two-big", gpus=2, gpu_memory_bytes=50 * GIB), None),
        (j("h100", gpus=1, gpu_name="*H100*"), None),
    ]
    for job, want in cases:
        got = plan([job], [w("w1", free=2, gpus=mixed)])
        assert (got[0].gpu_ids if got else None) == want, job.id


def test_accelerator_tags_and_counted_cores_and_memory_decide_the_worker():
    cuda = w("cuda", free=4, labels={"transformers": "", "zone": "eu"}, accelerator="cuda",
             free_cpus=4, free_memory=16 * GIB)  # fmt: skip
    cpu = w("cpu", free=4, labels={"zone": "eu"}, free_cpus=16, free_memory=64 * GIB)
    cases = [
        (j("on-cuda", accelerator="cuda"), "cuda"),
        (j("on-rocm", accelerator="rocm"), None),
        (j("tagged", tags=("transformers",)), "cuda"),
        (j("two-tags", tags=("transformers", "zone")), "cuda"),  # a label is a tag too
        (j("untagged-worker", tags=("bert",)), None),
        (j("many-cores", cpus=8), "cpu"),
        (j("much-memory", memory_bytes=32 * GIB), "cpu"),
        (j("too-much", memory_bytes=65 * GIB), None),
    ]
    for job, want in cases:
        got = plan([job], [cuda, cpu])
        assert (got[0].worker_id if got else None) == want, job.id
    # Cores are held while a job runs, whatever slots are left: 1 job of 3 on 4 cores, 5 on 16.
    got = plan([j(f"c{i}", cpus=3) for i in range(8)], [cuda, replace(cpu, free_slots=10)])
    assert sorted(a.worker_id for a in got) == ["cpu"] * 5 + ["cuda"]


def test_the_memory_buffer_is_never_claimed_and_a_paused_worker_takes_nothing():
    buffered = offer(snap(memory_gb=100, buffer=0.2))
    assert buffered is not None and buffered.free_memory == 80 * GIB
    assert plan([j("m", memory_bytes=81 * GIB)], [buffered]) == []
    held = offer(snap(memory_gb=100, buffer=0.2), WorkerLoad(1, memory_bytes=30 * GIB))
    assert held is not None and held.free_memory == 50 * GIB
    assert offer(snap(paused=True)) is None


def test_a_plan_checked_again_drops_an_assignment_whose_gpu_was_taken_meanwhile():
    demands = {"a": j("a", gpus=1), "b": j("b", gpus=1)}
    chosen = plan(list(demands.values()), [w("w1", free=4, gpus=2)])
    assert [a.gpu_ids for a in chosen] == [(0,), (1,)]
    fresher = [w("w1", free=4, gpus=[GpuSnap(1, "NVIDIA A10", 16 * GIB)])]  # GPU 0 is taken
    assert still_fitting(chosen, demands, fresher) == [chosen[1]]


def test_a_tenants_quota_caps_its_running_jobs_and_gpus_across_pages():
    budget = Budget(jobs_left={"t": 2}, gpus_left={"t": 3})
    first = plan([j("a", gpus=2), j("b", gpus=2), j("c"), j("x", tenant="u")],
                 [w("w1", free=8, gpus=8), w("wu", free=1, tenant="u")], budget)  # fmt: skip
    assert [a.job_id for a in first] == ["a", "c", "x"]  # b would hold 4 GPUs; u is uncapped
    assert budget.jobs_left == {"t": 0} and budget.gpus_left == {"t": 1}
    # The next page of the same round sees what the first spent.
    assert plan([j("d")], [w("w1", free=8, gpus=8)], budget) == []


def test_a_large_job_that_waited_holds_a_worker_and_small_ones_go_elsewhere():
    offers = [w("w1", free=3, gpus=1), w("w2", free=3, gpus=0)]
    big, smalls = j("big", gpus=2, waited_s=600), [j(f"s{i}") for i in range(4)]
    # Not waited long enough: the small jobs fill both workers, whatever the large one needs.
    early = Budget(reserve_after_s=300, given_capacity={"w1": w("w1", free=4, gpus=2),
                                                   "w2": w("w2", free=4)})  # fmt: skip
    got = plan([replace(big, waited_s=10), *smalls], offers, early)
    assert sorted(a.worker_id for a in got) == ["w1", "w1", "w2", "w2"] and not early.reserved
    # Waited past the threshold: the one worker it could ever fit on is held for it.
    late = Budget(reserve_after_s=300, given_capacity={"w1": w("w1", free=4, gpus=2),
                                                  "w2": w("w2", free=4)})  # fmt: skip
    got = plan([big, *smalls], offers, late)
    assert late.reserved == {"w1": "big"}
    assert [a.worker_id for a in got] == ["w2", "w2", "w2"]  # w2 full; the fourth waits
    # A job before it in claim order (higher priority) may still go there.
    urgent = plan(
        [j("urgent", priority=5), big],
        [w("w1", free=3, gpus=1)],
        Budget(reserve_after_s=300, given_capacity={"w1": w("w1", free=4, gpus=2)}),
    )
    assert [a.job_id for a in urgent] == ["urgent"]
    # Once it fits, it takes the worker and the hold ends.
    freed = Budget(reserve_after_s=300, given_capacity={"w1": w("w1", free=4, gpus=2)},
                   reserved={"w1": "big"})  # fmt: skip
    got = plan([big, *smalls], [w("w1", free=3, gpus=2)], freed)
    assert [a.job_id for a in got] == ["big", "s0", "s1"] and freed.reserved == {}


def gang(gid, nodes, **more):
    return [j(f"{gid}.{r}", gang_id=gid, nodes=nodes, rank=r, **more) for r in range(nodes)]


def test_a_gang_is_placed_whole_on_workers_of_its_own_or_not_at_all():
    three = [w("w1", free=2), w("w2", free=2), w("w3", free=2)]
    got = plan(gang("g", 3), three)
    assert [a.job_id for a in got] == ["g.0", "g.1", "g.2"]
    assert len({a.worker_id for a in got}) == 3  # one member a worker
    # Two workers for three members: nothing is placed, and nothing is held, so the job
    # behind it still runs.
    assert [a.job_id for a in plan([*gang("g", 3), j("after")], three[:2])] == ["after"]
    # A gang whose members are not all queued (the page, or one still stopping) waits.
    assert plan(gang("g", 3)[:2], three) == []


def test_two_gangs_wanting_the_same_workers_never_hold_half_each():
    fleet = [w("w1", free=1, gpus=1), w("w2", free=1, gpus=1), w("w3", free=1, gpus=1)]
    got = plan([*gang("a", 2, gpus=1), *gang("b", 2, gpus=1)], fleet)
    assert [a.job_id for a in got] == ["a.0", "a.1"]  # b waits whole, a runs whole


def test_a_plan_checked_again_drops_a_gang_that_lost_a_member():
    members = gang("g", 2)
    demands = {m.id: m for m in members}
    chosen = plan(members, [w("w1"), w("w2")])
    assert still_fitting(chosen, demands, [w("w1")]) == []  # w2 went: the whole gang waits


def test_targets_keep_jobs_to_remote_or_local_workers_and_auto_prefers_remote_ones():
    local, remote = w("local", free=4, local=True), w("remote", free=1)
    assert [a.worker_id for a in plan([j("l", target="local")], [local, remote])] == ["local"]
    assert [a.worker_id for a in plan([j("r", target="worker")], [local, remote])] == ["remote"]
    # auto: the remote worker first, though the local one has more free slots; then local.
    got = plan([j("a1"), j("a2")], [local, remote])
    assert [a.worker_id for a in got] == ["remote", "local"]
    assert plan([j("r", target="worker")], [local]) == []


def test_a_higher_priority_that_fits_nowhere_stops_the_fewest_lowest_preemptible_attempts():
    four = tuple(GpuSnap(i, "NVIDIA A10", 16 * GIB) for i in range(4))
    cap = {"w1": w("w1", free=4, gpus=four), "w2": w("w2", free=4, gpus=four)}
    rooms = {"w1": w("w1", free=0), "w2": w("w2", free=0)}  # both full
    victims = [
        Victim("low-old", "w1", priority=0, gpu_ids=(0, 1), age=100),
        Victim("low-young", "w1", priority=0, gpu_ids=(2, 3), age=10),
        Victim("mid", "w2", priority=5, gpu_ids=(0, 1, 2, 3)),
    ]
    # Two GPUs for priority 9: on w1 one attempt stops (the youngest of the lowest), not w2's.
    assert preemptions([j("big", gpus=2, priority=9)], rooms, cap, victims) == [
        ("low-young", "big")
    ]
    # Four GPUs: w1 needs two stopped, w2 one.
    assert preemptions([j("all", gpus=4, priority=9)], rooms, cap, victims) == [("mid", "all")]
    # A priority not above theirs stops nothing; nor does a job that waits for those stopping.
    assert preemptions([j("same", gpus=2, priority=0)], rooms, cap, victims) == []
    going = [replace(v, stopping=True) if v.job_id == "low-young" else v for v in victims]
    assert preemptions([j("big", gpus=2, priority=9)], rooms, cap, going) == []
    # Two such jobs in one round do not both count on the same stopped attempt.
    got = preemptions([j("a", gpus=2, priority=9), j("b", gpus=2, priority=9)], rooms, cap,
                      victims)  # fmt: skip
    assert sorted(v for v, _ in got) == ["low-old", "low-young"]


def test_tenants_take_turns_on_shared_workers_by_what_each_runs():
    shared = w("pool", free=4, tenant="op", shared=True)
    queue = [j("a1", tenant="a"), j("a2", tenant="a"), j("a3", tenant="a"), j("b1", tenant="b"),
             j("b2", tenant="b")]  # fmt: skip
    # a already runs 2, b none: b's first two go before a's, then they alternate.
    got = plan(queue, [shared], Budget(running={"a": 2}))
    assert [x.job_id for x in got] == ["b1", "b2", "a1", "a2"]
    # Priority first all the same, and within a tenant its own order.
    urgent = plan([*queue, j("a9", tenant="a", priority=5)], [shared], Budget(running={"a": 2}))
    assert [x.job_id for x in urgent][:1] == ["a9"]
    # Another tenant's worker that is not shared takes none of them.
    assert plan(queue, [w("mine", free=4, tenant="op")], Budget(running={})) == []
