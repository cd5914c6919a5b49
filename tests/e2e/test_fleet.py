"""The working system, end to end: real coordinator and worker processes."""

from __future__ import annotations

import os
import sys

import pytest
from harness_e2e import pid_alive, wait_until

PY = sys.executable


def test_twenty_jobs_over_two_workers_all_succeed_with_logs(fleet):
    fleet.start_server()
    fleet.start_worker("a", slots=2)
    fleet.start_worker("b", slots=2)
    jobs = [fleet.submit([PY, "-c", f"print('hello from job {i}')"]) for i in range(20)]
    used = set()
    for i, job in enumerate(jobs):
        done = fleet.wait_state(job["id"], {"succeeded", "failed", "cancelled"})
        assert done["state"] == "succeeded", done
        assert f"hello from job {i}" in fleet.logs(job["id"])
        used.add(done["worker_id"])
    assert len(used) == 2  # both workers took work


def test_label_glob_routes_only_to_matching_workers(fleet):
    fleet.start_server()
    fleet.start_worker("cpu-box", labels={"gpu_type": "none"})
    fleet.start_worker("big-box", labels={"gpu_type": "a100-80g"})
    wait_until(lambda: len([w for w in fleet.workers().values() if w["status"] == "idle"]) == 2)
    ids = [fleet.submit([PY, "-c", "pass"], worker_labels={"gpu_type": "a100*"})["id"]
           for _ in range(4)]  # fmt: skip
    big = fleet.workers()["big-box"]["id"]
    for jid in ids:
        assert fleet.wait_state(jid, {"succeeded"})["worker_id"] == big


def test_drain_finishes_the_running_job_and_takes_no_new_one(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("d")
    flag = tmp_path / "go"
    running = fleet.submit([PY, "-c", f"import os,time\nwhile not os.path.exists({str(flag)!r}):"
                                      " time.sleep(0.05)\nprint('finished')"])  # fmt: skip
    fleet.wait_state(running["id"], {"running"})
    wid = fleet.workers()["d"]["id"]
    with fleet.api() as c:
        assert c.post(f"/api/admin/workers/{wid}/drain").status_code == 200
    later = fleet.submit([PY, "-c", "pass"])
    flag.touch()
    assert fleet.wait_state(running["id"], {"succeeded"})["state"] == "succeeded"
    assert "finished" in fleet.logs(running["id"])
    assert fleet.job(later["id"])["state"] == "queued"
    assert fleet.workers()["d"]["status"] in {"draining", "offline"}


def test_rotated_token_is_refused(fleet):
    fleet.start_server()
    worker = fleet.start_worker("r")
    wait_until(lambda: fleet.workers()["r"]["status"] == "idle", what="worker idle")
    wid = fleet.workers()["r"]["id"]
    with fleet.api() as c:
        new = c.post(f"/api/admin/workers/{wid}/token").json()
    assert new["token"] != worker.token
    # the worker's stream ends, it tries again with the old token, and gives up
    assert worker.wait(30) != 0
    assert "token" in worker.output().lower()
    import httpx

    r = httpx.post(fleet.url + "/api/workers/heartbeat", json={},
                   headers={"X-Worker-Token": worker.token})  # fmt: skip
    assert r.status_code == 401


def test_cancel_kills_the_whole_process_group(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("c")
    pids = tmp_path / "pids"
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)\n"
    )
    job = fleet.submit([PY, "-c", script])
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="pids")
    parent, child = map(int, pids.read_text().split())
    with fleet.api() as c:
        assert c.post(f"/api/jobs/{job['id']}/cancel").json()["state"] == "cancelling"
    assert fleet.wait_state(job["id"], {"cancelled"}, 30)["state"] == "cancelled"
    wait_until(lambda: not pid_alive(parent) and not pid_alive(child), 15, "group dead")


def test_worker_token_never_reaches_the_job(fleet):
    fleet.start_server()
    worker = fleet.start_worker("s")
    job = fleet.submit([PY, "-c", "import os\nfor k, v in sorted(os.environ.items()): "
                                  "print(f'{k}={v}')"], env={"MY_SETTING": "42"})  # fmt: skip
    assert fleet.wait_state(job["id"], {"succeeded"})["state"] == "succeeded"
    out = fleet.logs(job["id"])
    assert "MY_SETTING=42" in out and f"CORRAL_JOB_ID={job['id']}" in out
    assert worker.token not in out
    assert "CORRAL_WORKER_TOKEN" not in out and "CORRAL_WORKER__TOKEN" not in out


def test_ephemeral_worker_exits_after_one_job(fleet):
    fleet.start_server()
    worker = fleet.start_worker("e", persistent=False, slots=3)
    a = fleet.submit([PY, "-c", "print('one')"])
    b = fleet.submit([PY, "-c", "print('two')"])
    assert worker.wait(60) == 0
    states = {fleet.job(a["id"])["state"], fleet.job(b["id"])["state"]}
    assert states == {"succeeded", "queued"}
    assert fleet.workers()["e"]["status"] == "offline"


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")
def test_timeout_kills_and_counts_as_a_failure(fleet):
    fleet.start_server()
    fleet.start_worker("t")
    job = fleet.submit([PY, "-c", "import time; time.sleep(600)"], timeout_s=1, max_retries=0)
    done = fleet.wait_state(job["id"], {"failed", "succeeded"}, 60)
    assert done["state"] == "failed"
    assert fleet.job(job["id"])["attempts"][0]["outcome"] == "timed_out"
