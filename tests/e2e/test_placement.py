"""Placement with real coordinator and worker processes: GPUs handed out by index, the
requirements a job names, pause, the resource guard and a worker's task timeout.

No machine here has a GPU: the workers that need some find them through a stand-in NVML
(``tests/fakes/pynvml.py``, first on their PYTHONPATH), which is all the detection reads.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

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
