"""A worker that sandboxes its attempts (``--sandbox on``): a job, run as a process or as a
call in a warm interpreter, finds the worker's data directory and the hidden paths empty
but for its own directory, sees none of the machine's other processes, and still runs,
writes its files and reports its result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harness_e2e import free_port, wait_until

from corral.client import Client, call_job
from corral.worker.sandbox import available

HERE = str(Path(__file__).parent)
pytestmark = pytest.mark.skipif(available() is not None, reason=f"no sandbox: {available()}")


def test_a_sandboxed_job_sees_only_its_own_directory(fleet):
    fleet.start_server()
    work, server = fleet.root / "worker-box", fleet.root / "server"
    fleet.start_worker("box", CORRAL_WORKER__SANDBOX="on",
                       CORRAL_WORKER__SANDBOX_HIDE=str(server))  # fmt: skip
    script = (
        f"ls -A {work}; echo ---; ls -A {work}/attempts | wc -l; echo ---; ls -A {server};"
        ' echo ---; ls /proc | grep -c "^[0-9]"; echo made > made.txt;'
        ' printf \'{"seen": "%s"}\' "$(cat made.txt)" > "$CORRAL_RESULT_FILE"'
    )
    job = fleet.submit(["sh", "-c", script])
    done = fleet.wait_state(job["id"], {"succeeded", "failed"}, 60)
    assert done["state"] == "succeeded", fleet.logs(job["id"])
    parts = [p.split() for p in fleet.logs(job["id"]).split("---")]
    assert parts[0] == ["attempts"]  # not its journal, nor anything else of the worker's
    assert parts[1] == ["1"]  # its own attempt's directory, not the others'
    assert parts[2] == []  # the coordinator's data directory: its database, its keys
    assert int(parts[3][0]) <= 4  # its own processes: sh, ls, grep
    assert fleet.calls.result(job["id"])["result"] == {"seen": "made"}
    assert (server / "pki" / "ca.key").exists()  # hidden from the job, not from the machine

    # A call in a warm interpreter: the attempts' directories, and nothing else.
    (c,) = fleet.calls.submit_many([call_job("callees:listing", [str(work)],
                                             env={"PYTHONPATH": HERE})])  # fmt: skip
    wait_until(lambda: fleet.job(c.id)["state"] in {"succeeded", "failed"}, 60, "the call")
    assert fleet.calls.result(c.id)["result"] == {"value": ["attempts"]}, fleet.logs(c.id)


def test_a_worker_told_to_sandbox_where_it_cannot_exits(fleet, monkeypatch):
    fleet.start_server()
    w = fleet.start_worker("nobox", CORRAL_WORKER__SANDBOX="on", PATH="/nonexistent")
    assert w.wait(30) == 2
    assert "sandbox" in w.output()


def test_under_corral_up_a_job_cannot_read_the_fleets_files(tmp_path):
    data = tmp_path / "up-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "up", "--data-dir", str(data), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        key = wait_until(lambda: (data / "admin.key").exists() and (data / "admin.key").read_text(),
                         60, "corral up to write its key").strip()  # fmt: skip
        with Client(f"http://127.0.0.1:{port}", key, timeout=15) as c:
            wait_until(lambda: len([w for w in c.workers() if w.status == "idle"]) >= 1, 60)
            job = c.submit(["sh", "-c", f"cat {data}/admin.key; ls -A {data}; true"])
            done = c.wait(job.id, timeout=60)
            log = "".join(line + "\n" for line in c.logs(job.id))
        assert done.state == "succeeded", log
        assert key not in log and "No such file" in log, log
        assert log.split()[-1] == "workers", log  # only the way to its own directory
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
