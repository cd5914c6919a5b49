"""Faults on the coordinator's side: time it could not act is not the workers' silence."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from harness_e2e import wait_until

PY = sys.executable


def _job_until(flag: str) -> list[str]:
    code = f"import os, time\nwhile not os.path.exists({flag!r}): time.sleep(0.05)\n"
    return [PY, "-c", code]


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
def test_a_frozen_coordinator_does_not_kill_healthy_work(fleet, tmp_path):
    # Frozen (SIGSTOP) past the heartbeat timeout: when it thaws, its workers spoke all
    # along, it just could not listen. Their running job must go on as attempt 1.
    server = fleet.start_server(CORRAL_SERVER__HEARTBEAT_TIMEOUT_S="3",
                                CORRAL_SERVER__HEARTBEAT_INTERVAL_S="1",
                                CORRAL_SERVER__REAPER_INTERVAL_S="0.3")  # fmt: skip
    fleet.start_worker("a", heartbeat=0.5)
    flag = tmp_path / "go"
    job = fleet.submit(_job_until(str(flag)))
    fleet.wait_state(job["id"], {"running"})
    os.kill(server.pid, signal.SIGSTOP)
    try:
        time.sleep(8)  # well past the 3 s timeout
    finally:
        os.kill(server.pid, signal.SIGCONT)
    wait_until(lambda: fleet.workers()["a"]["status"] in ("busy", "idle"), 10, "the worker")
    time.sleep(2)  # a few reaper ticks after the thaw
    flag.touch()
    done = fleet.wait_state(job["id"], {"succeeded", "failed"}, 30)
    assert done["state"] == "succeeded", done
    assert [a["outcome"] for a in done["attempts"]] == ["succeeded"], done["attempts"]
    assert "coordinator.resumed" in server.output()


def _mount_tmpfs(path, size="24m"):
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    return lambda: subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path):
    import contextlib

    filler = path / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as fh:
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    return filler


def test_a_worker_whose_disk_is_full_runs_nothing_and_says_why(fleet, tmp_path):
    # Its data directory full, a worker must not start an attempt it cannot record: it
    # declines it (run again elsewhere, not failed) and takes no work until it has room.
    fleet.start_server()
    umount = _mount_tmpfs(tmp_path / "worker-full")
    try:
        full = fleet.start_worker("full", heartbeat=0.5)
        wait_until(lambda: fleet.workers()["full"]["status"] == "idle", 30, "the worker")
        filler = _fill(tmp_path / "worker-full")
        marks = tmp_path / "ran"
        marks.mkdir()
        job = fleet.submit([PY, "-c", f"import os; open({str(marks)!r} + '/' + "
                                      "os.environ['CORRAL_ATTEMPT'], 'w').close()"])  # fmt: skip
        wait_until(lambda: fleet.workers()["full"]["status"] == "constrained", 30, "constrained")
        assert (
            "free" in fleet.workers()["full"]["constrained"]
            or "written" in (fleet.workers()["full"]["constrained"])
        )
        fleet.start_worker("roomy", heartbeat=0.5)
        done = fleet.wait_state(job["id"], {"succeeded", "failed"}, 60)
        assert done["state"] == "succeeded"
        assert done["worker_id"] == fleet.workers()["roomy"]["id"]
        assert [a["outcome"] for a in done["attempts"]] == ["lost", "succeeded"]
        assert sorted(p.name for p in marks.iterdir()) == ["2"]  # attempt 1 never ran
        with fleet.api() as c:
            events = c.get(f"/api/jobs/{job['id']}/events").json()["events"]
        first = next(e for e in events if e["kind"] == "job.requeued")
        assert first["reason"] == "declined"
        filler.unlink()
        try:
            wait_until(lambda: fleet.workers()["full"]["status"] == "idle", 30, "room again")
        except AssertionError:
            print(full.output()[-3000:])
            raise
        assert full.alive()
    finally:
        fleet.close()
        umount()


def test_a_jobs_whole_output_is_shipped_before_its_end_is_reported(fleet):
    # Shipping 24 MB takes longer than the stall bound: as long as batches go through, the
    # worker keeps shipping, and the log the coordinator keeps is all of it.
    fleet.start_server()
    fleet.start_worker("a", CORRAL_WORKER__LOG_FLUSH_STALL_S="1")
    code = ("import sys\nline = 'x' * 1023 + '\\n'\nfor i in range(24 * 1024):\n"
            "    sys.stdout.write(line)\nprint('the end')\n")  # fmt: skip
    job = fleet.submit([PY, "-c", code])
    done = fleet.wait_state(job["id"], {"succeeded", "failed"}, 120)
    assert done["state"] == "succeeded"
    text = fleet.logs(job["id"])
    assert text.endswith("the end\n")
    assert len(text) == 24 * 1024 * 1024 + len("the end\n")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_a_frozen_coordinator_does_not_keep_the_workers_stream(fleet):
    """Two coordinators on one PostgreSQL; one freezes. Its workers move all of their
    traffic, the event stream included, to the other within seconds, so work submitted
    there still reaches them."""
    from harness_e2e import free_port

    first = fleet.start_server()
    second_port = free_port()
    fleet.start_server(port=second_port)
    second = f"http://127.0.0.1:{second_port}"
    fleet.start_worker("w", url=f"{fleet.url},{second}", heartbeat=1.0)
    warm = fleet.submit([PY, "-c", "pass"])
    assert fleet.wait_state(warm["id"], {"succeeded", "failed"}, 30)["state"] == "succeeded"
    os.kill(first.pid, signal.SIGSTOP)
    try:
        fleet.url = second  # from now on, talk to the one that answers
        started = time.monotonic()
        job = fleet.submit([PY, "-c", "print('reached')"])
        done = fleet.wait_state(job["id"], {"succeeded", "failed"}, 60)
        took = time.monotonic() - started
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert done["state"] == "succeeded", done
    assert took < 30, f"the worker needed {took:.0f}s to move to the coordinator that answers"


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_output_still_on_its_way_when_the_job_is_reported_follows_it(db_url, tmp_path):
    # The coordinator's database goes silent as the job ends: its last lines cannot be
    # stored for a while, so its end is reported without them (a result does not wait on
    # logs) and they follow once the coordinator takes them again.
    from faultproxy import FaultProxy
    from harness_e2e import Fleet
    from sqlalchemy.engine import make_url

    u = make_url(db_url)
    proxy = FaultProxy(u.host or "127.0.0.1", u.port or 5432).start()
    fleet = Fleet(tmp_path, u.set(port=proxy.port).render_as_string(hide_password=False))
    try:
        fleet.start_server(CORRAL_SERVER__DB_STATEMENT_TIMEOUT_S="1",
                           CORRAL_SERVER__DB_POOL_TIMEOUT_S="1",
                           CORRAL_SERVER__DB_CONNECT_TIMEOUT_S="1")  # fmt: skip
        fleet.start_worker("w", CORRAL_WORKER__LOG_FLUSH_STALL_S="1")
        go = tmp_path / "go"
        code = (f"import os, time\nprint('started', flush=True)\n"
                f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
                "print('the end')\n")  # fmt: skip
        job = fleet.submit([PY, "-c", code])
        fleet.wait_state(job["id"], {"running"})
        wait_until(lambda: "started" in fleet.logs(job["id"]), 30, "the first line")
        proxy.blackhole()
        go.touch()
        time.sleep(4)  # longer than the stall bound: the report goes without the last line
        proxy.restore()
        done = fleet.wait_state(job["id"], {"succeeded", "failed"}, 60)
        assert done["state"] == "succeeded"
        wait_until(lambda: "the end" in fleet.logs(job["id"]), 30, "the last line")
    finally:
        proxy.restore()
        fleet.close()
        proxy.stop()


def test_a_worker_started_on_a_full_disk_says_so_and_exits_2(fleet, tmp_path):
    fleet.start_server()
    umount = _mount_tmpfs(tmp_path / "worker-full")
    try:
        _fill(tmp_path / "worker-full")
        worker = fleet.start_worker("full", data_dir=tmp_path / "worker-full" / "data")
        assert worker.wait(30) == 2
        out = worker.output()
        assert "Traceback" not in out, out[-3000:]
        assert "journal" in out and "full" in out, out[-3000:]
    finally:
        fleet.close()
        umount()
