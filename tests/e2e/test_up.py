"""`corral up`: the README's first command, and Ctrl-C stopping all of it."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys

import httpx
import psutil
import pytest
from harness_e2e import free_port, wait_until

pytest.importorskip("sklearn", reason="the demo trains with scikit-learn (the examples extra)")


def _left_behind(marker: str) -> list[str]:
    """Processes still alive whose command line names this test's data directory."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if marker in cmd and p.info["status"] != psutil.STATUS_ZOMBIE and p.pid != os.getpid():
            out.append(f"{p.pid}: {cmd}")
    return out


def _up(tmp_path, *args):
    data = tmp_path / "up-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    argv = [sys.executable, "-m", "corral.cli", "up", "--data-dir", str(data),
            "--port", str(free_port()), *args]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True), str(data)  # fmt: skip


def test_demo_trains_the_sweep_and_leaves_nothing_running(tmp_path):
    proc, marker = _up(tmp_path, "--demo", "--epochs", "3")
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert out.count("succeeded") >= 6 and "ACCURACY" in out.upper(), out
    assert "LOSS BY EPOCH" in out and any(bar in out for bar in "▁▂▃▄▅▆▇█"), out
    assert not _left_behind(marker)


@pytest.mark.timeout(360)  # six runs of 400 epochs, one worker for most of it: ~2 min alone
def test_the_demo_survives_a_worker_killed_mid_sweep(tmp_path):
    proc, marker = _up(tmp_path, "--demo", "--epochs", "400")
    try:

        def checkpointed(job_id: str) -> bool:
            """The coordinator has stored a checkpoint of it: a kill now is one to resume."""
            db = sqlite3.connect(f"file:{marker}/corral.db?mode=ro", uri=True, timeout=5)
            try:
                q = "SELECT count(*) FROM artifacts WHERE job_id = ? AND kind = 'checkpoint'"
                return bool(db.execute(q, (job_id,)).fetchone()[0])
            except sqlite3.Error:
                return False
            finally:
                db.close()

        def training() -> psutil.Process | None:
            for p in psutil.process_iter(["cmdline", "cwd"]):
                if "corral.examples.digits" not in (p.info["cmdline"] or []):
                    continue
                cwd = p.info["cwd"] or ""
                if cwd.startswith(marker):  # this demo's, by its directory (attempts/<job>-<n>)
                    found = re.search(r"/attempts/([^/]+)-\d+(/|$)", cwd)
                    if found and checkpointed(found[1]):
                        return p
            return None

        job = wait_until(training, 120, "a training run with a stored checkpoint")
        # Its worker, and the run with it, die as their machine would.
        worker = next(a for a in job.parents() if "worker" in " ".join(a.cmdline()))
        worker.kill()
        os.killpg(os.getpgid(job.pid), signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert out.count("succeeded") >= 6 and " resumed at epoch " in out, out


def test_ctrl_c_stops_workers_and_coordinator_cleanly(tmp_path):
    proc, marker = _up(tmp_path)
    try:
        lines: list[str] = []

        def url_printed() -> str | None:
            line = proc.stdout.readline()
            lines.append(line)
            return next((w for w in line.split() if w.startswith("http://127.0.0.1")), None)

        url = wait_until(url_printed, 60, "corral up to print its URL").rstrip(",")
        wait_until(lambda: httpx.get(url + "/healthz", timeout=2).status_code == 200, 30)
        wait_until(lambda: len(_left_behind(marker)) >= 3, 30, "two workers to start")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode in (0, 130), "".join(lines) + out
        assert "Traceback" not in out
        wait_until(lambda: not _left_behind(marker), 15, "every process to end")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
