"""Placement with real coordinator and worker processes: GPUs handed out by index, the
requirements a job names, pause, the resource guard and a worker's task timeout.

No machine here has a GPU: the workers that need some find them through a stand-in NVML
(``tests/fakes/pynvml.py``, first on their PYTHONPATH), which is all the detection reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from harness_e2e import wait_until

PY = sys.executable
FAKES = Path(__file__).resolve().parent.parent / "fakes"
# What the stand-in NVML reports: an 80 GB A100 at index 0, a 24 GB A10 at index 1.
TWO_GPUS = [{"name": "NVIDIA A100-SXM4-80GB", "memory_gb": 80, "uuid": "GPU-a100"},
            {"name": "NVIDIA A10", "memory_gb": 24, "uuid": "GPU-a10"}]  # fmt: skip


def with_gpus(gpus: list[dict[str, object]]) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(FAKES), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "CORRAL_FAKE_NVML": json.dumps(gpus)}


def waits_for(flag: Path) -> list[str]:
    """A job that prints the GPUs it was given, then waits for ``flag``."""
    code = ("import os, time\nprint('cvd=' + repr(os.environ.get('CUDA_VISIBLE_DEVICES')),"
            f" flush=True)\nwhile not os.path.exists({str(flag)!r}): time.sleep(0.05)")  # fmt: skip
    return [PY, "-c", code]


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_gpus_are_handed_out_by_index_disjoint_and_recorded(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("gpu-box", slots=3, **with_gpus(TWO_GPUS))
    wait_until(lambda: fleet.workers().get("gpu-box", {}).get("status") == "idle")
    box = fleet.workers()["gpu-box"]
    assert (box["accelerator"], box["gpu_count"]) == ("cuda", 2)
    assert [g["name"] for g in box["gpus"]] == ["NVIDIA A100-SXM4-80GB", "NVIDIA A10"]
    flag = tmp_path / "go"
    big = fleet.submit(waits_for(flag), gpus=1, gpu_memory_gb=40)  # only the A100 has 40 GB
    small = fleet.submit(waits_for(flag), gpus=1)
    none = fleet.submit(waits_for(flag))
    for job in (big, small, none):
        fleet.wait_state(job["id"], {"running"})
    assert fleet.workers()["gpu-box"]["gpus_in_use"] == [0, 1]
    third = fleet.submit([PY, "-c", "pass"], gpus=1)  # a free slot, but no free GPU
    flag.touch()
    for job in (big, small, none):
        assert fleet.wait_state(job["id"], {"succeeded"})["state"] == "succeeded"
    assert "cvd='0'" in fleet.logs(big["id"]) and "cvd='1'" in fleet.logs(small["id"])
    assert "cvd=''" in fleet.logs(none["id"])  # asking none, it sees none
    assert [a["gpu_ids"] for a in fleet.job(big["id"])["attempts"]] == [[0]]
    assert [a["gpu_ids"] for a in fleet.job(none["id"])["attempts"]] == [[]]
    # The GPU a job freed goes to the one that waited for it.
    assert fleet.wait_state(third["id"], {"succeeded"})["state"] == "succeeded"


def test_a_job_runs_only_on_a_worker_with_what_it_names(fleet):
    fleet.start_server()
    fleet.start_worker("cpu-box", slots=2, labels={"transformers": ""})
    fleet.start_worker("gpu-box", slots=2, **with_gpus(TWO_GPUS))
    wait_until(lambda: [w["status"] for w in fleet.workers().values()] == ["idle", "idle"])
    ids = {w["name"]: w["id"] for w in fleet.workers().values()}
    cases = [  # (requirements, the worker that must run it)
        ({"accelerator": "cuda"}, "gpu-box"),
        ({"accelerator": "cpu"}, "cpu-box"),
        ({"tags": ["transformers"]}, "cpu-box"),
        ({"gpus": 1, "gpu_name": "*a10"}, "gpu-box"),
        ({"gpus": 2}, "gpu-box"),
    ]
    jobs = [(fleet.submit([PY, "-c", "pass"], **asks), where) for asks, where in cases]
    for job, where in jobs:
        assert fleet.wait_state(job["id"], {"succeeded"})["worker_id"] == ids[where], job
    nowhere = [fleet.submit([PY, "-c", "pass"], **asks)["id"] for asks in
               ({"gpus": 1, "gpu_name": "*H100*"}, {"cpus": 10_000}, {"memory_gb": 100_000},
                {"tags": ["bert"]})]  # fmt: skip
    done = fleet.submit([PY, "-c", "pass"])  # submitted after them, placed before them
    fleet.wait_state(done["id"], {"succeeded"})
    assert [fleet.job(j)["state"] for j in nowhere] == ["queued"] * 4
    why = [fleet.calls.why(j).reasons for j in nowhere]
    assert why[0] == ["no worker has 1 GPU named *H100* (largest: 0)"]
    assert why[1][0].startswith("no worker has 10000 cores (largest: ")
    assert why[3] == ["no worker has the tags bert"]


def test_a_paused_worker_takes_no_new_work_and_a_resumed_one_does(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("p", slots=2)
    flag = tmp_path / "go"
    running = fleet.submit(waits_for(flag))
    fleet.wait_state(running["id"], {"running"})
    with fleet.api() as c:
        wid = fleet.workers()["p"]["id"]
        paused = c.post(f"/api/admin/workers/{wid}/pause").json()
        assert (paused["paused"], paused["status"]) == (True, "paused")
        later = fleet.submit([PY, "-c", "pass"])
        flag.touch()  # what it ran goes on
        assert fleet.wait_state(running["id"], {"succeeded"})["state"] == "succeeded"
        assert fleet.job(later["id"])["state"] == "queued"
        assert c.post(f"/api/admin/workers/{wid}/resume").json()["paused"] is False
        assert fleet.wait_state(later["id"], {"succeeded"})["worker_id"] == wid
        kinds = [e["kind"] for e in c.get(f"/api/admin/workers/{wid}/events").json()["events"]]
    assert kinds.index("worker.paused") < kinds.index("worker.resumed")


def test_a_worker_over_its_limit_is_constrained_and_takes_nothing(fleet):
    fleet.start_server()
    # Any running machine uses more than 1 % of its memory.
    fleet.start_worker("g", CORRAL_WORKER__MAX_MEMORY_PERCENT="1")
    wait_until(lambda: fleet.workers().get("g", {}).get("status") == "constrained", 30)
    why = fleet.workers()["g"]["constrained"]
    assert why.startswith("memory ") and "above the limit of 1%" in why, why
    job = fleet.submit([PY, "-c", "pass"])
    wait_until(lambda: fleet.workers()["g"]["status"] == "constrained")
    assert fleet.job(job["id"])["state"] == "queued"


def test_a_workers_task_timeout_caps_every_job(fleet):
    fleet.start_server()
    fleet.start_worker("t", CORRAL_WORKER__TASK_TIMEOUT_S="1")
    job = fleet.submit([PY, "-c", "import time; time.sleep(30)"], max_retries=0, timeout_s=600)
    done = fleet.wait_state(job["id"], {"succeeded", "failed"}, seconds=30)
    assert done["state"] == "failed" and "timeout" in (done["error"] or ""), done


def test_a_tenants_quota_holds_its_jobs_queued_until_it_is_lifted(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("q", slots=2)
    tenant = fleet.calls.tenants()[0].name  # the operator's own
    assert fleet.calls.set_quota(tenant, max_running_jobs=1).max_running_jobs == 1
    flag = tmp_path / "go"
    first, second = fleet.submit(waits_for(flag)), fleet.submit(waits_for(flag))
    fleet.wait_state(first["id"], {"running"})
    assert fleet.job(second["id"])["state"] == "queued"
    assert fleet.calls.why(second["id"]).reasons[0] == (
        "tenant quota of 1 running jobs reached (1 running)"
    )
    assert fleet.calls.set_quota(tenant).max_running_jobs is None  # lifted
    fleet.wait_state(second["id"], {"running"})
    flag.touch()


GANG_ENV = (
    "import os\nprint(' '.join(f'{k}={os.environ.get(k)}' for k in ('RANK', 'WORLD_SIZE',"
    " 'NODE_RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')), flush=True)\n"
)


def test_a_gang_runs_on_as_many_workers_at_once_each_told_its_rank(fleet):
    fleet.start_server()
    for name in ("n0", "n1", "n2"):
        fleet.start_worker(name)
    wait_until(lambda: [w["status"] for w in fleet.workers().values()] == ["idle"] * 3)
    gang = fleet.submit([PY, "-c", GANG_ENV], nodes=3)
    assert (gang["nodes"], gang["rank"], gang["gang_id"]) == (3, 0, gang["id"])
    members = fleet.job(gang["id"])["members"]
    assert members == [gang["id"], f"{gang['id']}.1", f"{gang['id']}.2"]
    done = [fleet.wait_state(m, {"succeeded", "failed"}) for m in members]
    assert [d["state"] for d in done] == ["succeeded"] * 3
    assert len({d["worker_id"] for d in done}) == 3  # a worker each
    lines = sorted(fleet.logs(gang["id"]).splitlines())  # every member's, after its rank
    master = lines[0].split()[-2:]
    for rank, line in enumerate(lines):
        want = f"[rank {rank}] RANK={rank} WORLD_SIZE=3 NODE_RANK={rank} LOCAL_RANK=0 "
        assert line.startswith(want), line
        assert line.split()[-2:] == master  # one rendezvous for all
    assert master[0] == "MASTER_ADDR=127.0.0.1" and 29500 <= int(master[1].split("=")[1]) < 30500


def test_a_gang_that_cannot_be_placed_whole_holds_nothing(fleet):
    fleet.start_server()
    fleet.start_worker("only", slots=2)
    wait_until(lambda: fleet.workers().get("only", {}).get("status") == "idle")
    gang = fleet.submit([PY, "-c", "pass"], nodes=2)
    single = fleet.submit([PY, "-c", "pass"])  # after it, yet it runs: the gang holds nothing
    assert fleet.wait_state(single["id"], {"succeeded"})["state"] == "succeeded"
    assert [fleet.job(m)["state"] for m in fleet.job(gang["id"])["members"]] == ["queued"] * 2


def test_a_member_that_fails_stops_its_gang_which_runs_again_as_one(fleet):
    fleet.start_server()
    fleet.start_worker("g0")
    fleet.start_worker("g1")
    wait_until(lambda: [w["status"] for w in fleet.workers().values()] == ["idle"] * 2)
    # On the first attempt rank 1 fails at once and rank 0 would run for a minute: it is
    # stopped, and both run again.
    code = GANG_ENV + ("import os, sys, time\nfirst = os.environ['CORRAL_ATTEMPT'] == '1'\n"
                       "if first and os.environ['RANK'] == '1': time.sleep(0.5); sys.exit(3)\n"
                       "if first: time.sleep(60)\n")  # fmt: skip
    gang = fleet.submit([PY, "-c", code], nodes=2, max_retries=2)
    members = fleet.job(gang["id"])["members"]
    done = [fleet.wait_state(m, {"succeeded", "failed"}, seconds=40) for m in members]
    assert [d["state"] for d in done] == ["succeeded"] * 2, done
    assert [d["attempt"] for d in done] == [2, 2]  # both ran again, together
    with fleet.api() as c:
        events = c.get(f"/api/jobs/{gang['id']}/events").json()["events"]
    stopped = [e for e in events if e["reason"] == "gang_stopped"]
    assert stopped and stopped[0]["message"] == f"member {members[1]} of its gang ended"


def test_a_gangs_logs_interleave_with_their_rank_or_come_one_rank_alone(fleet):
    fleet.start_server()
    fleet.start_worker("l0")
    fleet.start_worker("l1")
    wait_until(lambda: [w["status"] for w in fleet.workers().values()] == ["idle"] * 2)
    code = "import os\nfor i in range(3): print(f'line {i} of', os.environ['RANK'], flush=True)"
    gang = fleet.submit([PY, "-c", code], nodes=2)
    for m in fleet.job(gang["id"])["members"]:
        fleet.wait_state(m, {"succeeded"})
    merged = fleet.logs(gang["id"]).splitlines()
    assert sorted(merged) == sorted(f"[rank {r}] line {i} of {r}" for r in (0, 1) for i in range(3))
    with fleet.api() as c:
        one = c.get(f"/api/jobs/{gang['id']}/logs", params={"rank": 1})
        assert one.text.splitlines() == [f"line {i} of 1" for i in range(3)]
        bad = c.get(f"/api/jobs/{gang['id']}/logs", params={"rank": 2})
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "rank"


def test_a_two_worker_ddp_gang_ends_with_the_weights_of_one_process(fleet, tmp_path):
    if os.environ.get("CORRAL_REQUIRE_TORCH") != "1":
        pytest.importorskip("torch")
    import torch

    script = str(Path(__file__).with_name("ddp_train.py"))
    alone = tmp_path / "alone.pt"
    subprocess.run([PY, script, str(alone)], check=True, capture_output=True, timeout=120)
    fleet.start_server()
    fleet.start_worker("ddp0")
    fleet.start_worker("ddp1")
    wait_until(lambda: [w["status"] for w in fleet.workers().values()] == ["idle"] * 2)
    together = tmp_path / "gang.pt"
    gang = fleet.submit([PY, script, str(together)], nodes=2, max_retries=1)
    members = fleet.job(gang["id"])["members"]
    done = [fleet.wait_state(m, {"succeeded", "failed"}, seconds=120) for m in members]
    assert [d["state"] for d in done] == ["succeeded"] * 2, fleet.logs(gang["id"])
    assert "rank 1 of 2: loss" in fleet.logs(members[1])
    want, got = torch.load(alone), torch.load(together)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.allclose(want[name], got[name], atol=1e-6), name


def test_cancelling_a_gang_cancels_every_member(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("c0")
    fleet.start_worker("c1")
    wait_until(lambda: [w["status"] for w in fleet.workers().values()] == ["idle"] * 2)
    gang = fleet.submit(waits_for(tmp_path / "never"), nodes=2)
    members = fleet.job(gang["id"])["members"]
    for m in members:
        fleet.wait_state(m, {"running"})
    with fleet.api() as c:
        assert c.post(f"/api/jobs/{gang['id']}/cancel").status_code == 200
    assert [fleet.wait_state(m, {"cancelled", "failed", "queued"})["state"] for m in members] == [
        "cancelled",
        "cancelled",
    ]


def test_a_coordinator_with_local_workers_keeps_targets_apart(fleet):
    fleet.start_server(args=("--local-workers", "1"))
    wait_until(lambda: fleet.workers().get("local-1", {}).get("status") == "idle", 30)
    assert fleet.workers()["local-1"]["local"] is True
    fleet.start_worker("remote")
    wait_until(lambda: fleet.workers().get("remote", {}).get("status") == "idle")
    ids = {name: w["id"] for name, w in fleet.workers().items()}
    for target, where in (("local", "local-1"), ("worker", "remote"), ("auto", "remote")):
        job = fleet.submit([PY, "-c", "pass"], target=target)
        assert fleet.wait_state(job["id"], {"succeeded"})["worker_id"] == ids[where], target
    assert fleet.job(job["id"])["target"] == "auto"
    # Its own workers go with it, even when it is killed outright and cannot stop them.
    assert fleet.server is not None
    local = [p for p in psutil.Process(fleet.server.pid).children(recursive=True)
             if "--name" in p.cmdline() and "local-1" in p.cmdline()]  # fmt: skip
    assert len(local) == 1
    fleet.server.kill9()
    wait_until(lambda: not local[0].is_running() or local[0].status() == psutil.STATUS_ZOMBIE,
               30, "its local worker to stop")  # fmt: skip


def test_a_higher_priority_job_preempts_a_preemptible_one_which_runs_again_unpenalised(
    fleet, tmp_path
):
    fleet.start_server()
    fleet.start_worker("p1", slots=1)
    wait_until(lambda: fleet.workers().get("p1", {}).get("status") == "idle")
    mark = tmp_path / "checkpoint"
    low = fleet.submit([PY, "-c", (
        "import os, signal, sys, time\nattempt = os.environ['CORRAL_ATTEMPT']\n"
        f"def stop(*_):\n    open({str(mark)!r}, 'w').write(attempt); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "while attempt == '1': time.sleep(0.05)\n"
        f"print('resumed after attempt', open({str(mark)!r}).read())\n")],
        preemptible=True, max_retries=0)  # fmt: skip
    fleet.wait_state(low["id"], {"running"})
    high = fleet.submit([PY, "-c", "print('urgent')"], priority=5)
    assert fleet.wait_state(high["id"], {"succeeded"})["state"] == "succeeded"
    done = fleet.wait_state(low["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded" and done["preemptions"] == 1, done
    assert [a["outcome"] for a in done["attempts"]] == ["preempted", "succeeded"]
    assert mark.read_text() == "1"  # it was told, and had its grace to checkpoint
    assert "resumed after attempt 1" in fleet.logs(low["id"])
    # Without --preemptible nothing is stopped: the urgent job waits.
    keeps = fleet.submit([PY, "-c", "import time; time.sleep(3)"])
    fleet.wait_state(keeps["id"], {"running"})
    waits = fleet.submit([PY, "-c", "pass"], priority=9)
    assert fleet.wait_state(keeps["id"], {"succeeded"})["attempt"] == 1
    assert fleet.wait_state(waits["id"], {"succeeded"})["state"] == "succeeded"


def test_an_operators_shared_worker_runs_every_tenants_jobs_and_stays_theirs(fleet):
    from corral.client import Client

    fleet.start_server()
    acme = fleet.calls.onboard("Acme")
    with Client(fleet.url, acme.api_key, timeout=15) as tenant:
        with fleet.api() as raw:  # a tenant's admin may not make one
            r = raw.post("/api/admin/workers", json={"name": "x", "shared": True},
                         headers={"Authorization": f"Bearer {acme.api_key}"})  # fmt: skip
            assert r.status_code == 403 and r.json()["errors"][0]["field"] == "shared"
        created = fleet.calls.create_worker("pool", persistent=True, shared=True)
        fleet.start_worker("pool", token=created.token)
        wait_until(lambda: fleet.workers().get("pool", {}).get("status") == "idle")
        job = tenant.submit([PY, "-c", "print('ran for acme')"])
        done = wait_until(lambda: (v := tenant.job(job.id)).state == "succeeded" and v, 30)
        assert done.worker_id == created.id
        assert "ran for acme" in "\n".join(tenant.logs(job.id))
        assert tenant.workers() == []  # the pool is the operator's: Acme sees none of it
        assert [w.shared for w in fleet.calls.workers()] == [True]
        # A suspended tenant's attempts on the pool stop, and the pool stays up.
        long = tenant.submit([PY, "-c", "import time; time.sleep(60)"])
        wait_until(lambda: tenant.job(long.id).state == "running", 30)
        fleet.calls.suspend_tenant("Acme")
        wait_until(lambda: fleet.calls.workers()[0].running == 0, 30)
        assert fleet.calls.workers()[0].status == "idle"
