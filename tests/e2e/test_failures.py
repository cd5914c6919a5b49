"""Failure is the normal path: killed workers, a killed coordinator, a cut link, an outage.
Each test does the damage for real and checks that nothing is lost or done twice."""

from __future__ import annotations

import sys

import pytest
from faultproxy import FaultProxy
from harness_e2e import free_port, pid_alive, wait_until

PY = sys.executable


def blocking_job(tmp_path, name="job"):
    """A job that records its pid per attempt, then waits for a flag file."""
    flag = tmp_path / f"{name}.go"
    script = (
        "import os, time\n"
        f"open({str(tmp_path)!r} + f'/{name}.' + os.environ['CORRAL_ATTEMPT'] + '.pid', 'w')"
        ".write(str(os.getpid()))\n"
        f"while not os.path.exists({str(flag)!r}): time.sleep(0.05)\n"
        "print('done attempt', os.environ['CORRAL_ATTEMPT'])\n"
    )
    return [PY, "-c", script], flag


def pid_of(tmp_path, name, attempt):
    f = tmp_path / f"{name}.{attempt}.pid"
    return int(f.read_text()) if f.exists() and f.read_text() else None


def outcomes(fleet, job_id):
    return [a["outcome"] for a in fleet.job(job_id)["attempts"]]


def test_killed_worker_job_completes_elsewhere_once(fleet, tmp_path):
    fleet.start_server()
    a = fleet.start_worker("a")
    cmd, flag = blocking_job(tmp_path)
    job = fleet.submit(cmd)
    fleet.wait_state(job["id"], {"running"})
    orphan = wait_until(lambda: pid_of(tmp_path, "job", 1), what="attempt 1 pid")
    a.kill9()  # the worker dies; its job's process is left behind as an orphan
    fleet.start_worker("b")
    wait_until(lambda: fleet.job(job["id"])["attempt"] == 2, 30, "a second attempt")
    fleet.wait_state(job["id"], {"running"})
    flag.touch()
    done = fleet.wait_state(job["id"], {"succeeded", "failed"})
    assert done["state"] == "succeeded"
    assert done["worker_id"] == fleet.workers()["b"]["id"]
    assert outcomes(fleet, job["id"]) == ["lost", "succeeded"]
    # the crashed worker comes back, finds its orphan in its journal, and stops it
    fleet.start_worker("a", token=a.token)
    wait_until(lambda: not pid_alive(orphan), 30, "the orphaned attempt to be stopped")
    assert fleet.job(job["id"])["state"] == "succeeded"


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_killed_coordinator_loses_nothing(fleet):
    server = fleet.start_server()
    fleet.start_worker("w1", slots=2)
    fleet.start_worker("w2", slots=2)
    ids = [fleet.submit([PY, "-c", f"import time; time.sleep(0.2); print({i})"])["id"]
           for i in range(24)]  # fmt: skip
    wait_until(lambda: sum(fleet.job(j)["state"] == "succeeded" for j in ids) >= 4,
               what="some jobs done")  # fmt: skip
    server.kill9()
    fleet.start_server()
    for i, jid in enumerate(ids):
        done = fleet.wait_state(jid, {"succeeded", "failed", "cancelled"}, 90)
        assert done["state"] == "succeeded", done
        assert outcomes(fleet, jid).count("succeeded") == 1
        assert fleet.logs(jid).count(f"{i}\n") >= 1


def test_cut_link_requeues_and_the_stale_worker_is_stopped(fleet, tmp_path):
    fleet.start_server()
    proxy = FaultProxy("127.0.0.1", fleet.port).start()
    try:
        fleet.start_worker("far", url=proxy.url)
        cmd, flag = blocking_job(tmp_path)
        job = fleet.submit(cmd)
        fleet.wait_state(job["id"], {"running"})
        stale = wait_until(lambda: pid_of(tmp_path, "job", 1), what="attempt 1 pid")
        proxy.cut()
        wait_until(lambda: fleet.job(job["id"])["state"] == "queued", 30, "requeue")
        assert fleet.workers()["far"]["status"] == "offline"
        fleet.start_worker("near")
        wait_until(lambda: pid_of(tmp_path, "job", 2), 30, "attempt 2 to start")
        assert pid_alive(stale)  # cut off, the first attempt still runs
        proxy.restore()
        wait_until(lambda: not pid_alive(stale), 60, "the stale attempt to be stopped")
        flag.touch()
        done = fleet.wait_state(job["id"], {"succeeded", "failed"})
        assert done["state"] == "succeeded"
        assert done["worker_id"] == fleet.workers()["near"]["id"]
        assert outcomes(fleet, job["id"]) == ["lost", "succeeded"]
    finally:
        proxy.stop()


def test_result_made_during_an_outage_is_delivered_after(fleet, tmp_path):
    server = fleet.start_server()
    fleet.start_worker("w")
    script = (
        "import os, time\nfrom corral import sdk\n"
        f"while not os.path.exists({str(tmp_path / 'go')!r}): time.sleep(0.05)\n"
        "sdk.set_result({'answer': 42})\nopen(" + repr(str(tmp_path / "ended")) + ", 'w')\n"
    )
    job = fleet.submit([PY, "-c", script])
    fleet.wait_state(job["id"], {"running"})
    server.kill9()
    (tmp_path / "go").touch()
    wait_until(lambda: (tmp_path / "ended").exists(), 30, "the job to end during the outage")
    fleet.start_server()
    done = fleet.wait_state(job["id"], {"succeeded", "failed", "queued"}, 60)
    assert done["state"] == "succeeded", done
    assert done["result"] == {"answer": 42}
    assert outcomes(fleet, job["id"]) == ["succeeded"]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_worker_fails_over_to_the_next_coordinator(fleet, tmp_path):
    """Two coordinators share one PostgreSQL; the worker knows both and survives one."""
    first = fleet.start_server()
    second_port = free_port()
    fleet.start_server(port=second_port)
    second = f"http://127.0.0.1:{second_port}"
    fleet.start_worker("w", url=f"{fleet.url},{second}")
    cmd, flag = blocking_job(tmp_path)
    job = fleet.submit(cmd)
    fleet.wait_state(job["id"], {"running"})
    first.kill9()
    fleet.url = second  # from now on, talk to the one that is left
    flag.touch()
    done = fleet.wait_state(job["id"], {"succeeded", "failed", "queued"}, 60)
    assert done["state"] == "succeeded", done
    assert outcomes(fleet, job["id"]) == ["succeeded"]
    later = fleet.submit([PY, "-c", "print('after fail-over')"])
    assert fleet.wait_state(later["id"], {"succeeded", "failed"}, 60)["state"] == "succeeded"
