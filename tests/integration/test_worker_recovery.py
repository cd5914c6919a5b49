"""corral worker --recover / --reset-state: repair or clear a worker's local state, saying
what was done, before it starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from corral.protocol import AttemptReport
from corral.worker import _procs, recovery
from corral.worker.journal import AttemptRecord, Journal

pytestmark = pytest.mark.timeout(60)


def _rec(tmp: Path, job: str, pid: int, *, workdir: Path | None = None) -> AttemptRecord:
    wd = workdir or tmp / "attempts" / f"{job}-1"
    return AttemptRecord(job_id=job, attempt=1, pid=pid, pgid=pid,
                         create_time=_procs.create_time(pid), workdir=wd,
                         started_at=time.time())  # fmt: skip


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            start_new_session=True)  # fmt: skip


def _state(data: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path]:
    """A journal with: a live attempt, a live one whose directory is gone, one that ended
    without an exit status, an owed report, and a stray directory."""
    (data / "attempts" / "live-1" / ".corral").mkdir(parents=True)
    (data / "attempts" / "dead-1" / ".corral").mkdir(parents=True)
    (data / "attempts" / "stray-9").mkdir(parents=True)
    live, homeless = _sleeper(), _sleeper()
    j = Journal(data)
    try:
        j.record_started(_rec(data, "live", live.pid))
        j.record_started(_rec(data, "gone", homeless.pid, workdir=data / "attempts" / "nope"))
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        j.record_started(_rec(data, "dead", int(dead.stdout)))
        j.finish("owed", 1, AttemptReport(attempt=1, status="succeeded", exit_code=0))
    finally:
        j.close()
    return live, homeless, data


def test_recover_keeps_what_runs_and_drops_what_cannot_be_known(tmp_path: Path) -> None:
    live, homeless, data = _state(tmp_path / "w")
    try:
        account = str(recovery.recover(data))
        assert homeless.wait(10) == -signal.SIGKILL  # nothing could supervise it any more
        assert "live attempt 1: still running" in account
        assert "gone attempt 1: its directory is gone; dropped" in account
        assert "dead attempt 1: ended with no exit status; dropped" in account
        assert "1 final report(s) owed" in account
        assert "2 attempt directories that no attempt owns: removed" in account  # stray, dead
        assert not (data / "attempts" / "stray-9").exists()
        j = Journal(data)
        try:
            assert [r.job_id for r in j.attempts()] == ["live"]
            assert j.pending_count() == 1
        finally:
            j.close()
        assert live.poll() is None  # what runs is left for the worker to adopt
    finally:
        for p in (live, homeless):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def test_a_corrupt_journal_is_set_aside(tmp_path: Path) -> None:
    data = tmp_path / "w"
    data.mkdir()
    (data / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    account = str(recovery.recover(data))
    assert "set aside" in account
    assert any(p.name.startswith("journal.sqlite3.corrupt-") for p in data.iterdir())
    Journal(data).close()  # a fresh one opens


def test_reset_stops_what_ran_and_clears_everything(tmp_path: Path) -> None:
    live, homeless, data = _state(tmp_path / "w")
    account = str(recovery.reset(data))
    live.wait(10)  # stopped
    homeless.wait(10)
    assert "live attempt 1: stopped" in account and "not delivered: dropped" in account
    assert not (data / "attempts").exists() and not (data / "journal.sqlite3").exists()


def test_the_cli_prints_the_account_then_starts(tmp_path: Path) -> None:
    data = tmp_path / "w"
    data.mkdir()
    (data / "journal.sqlite3").write_bytes(b"garbage" * 200)
    env = {**os.environ, "CORRAL_WORKER__TOKEN": "wt_x"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url",
         "http://127.0.0.1:9", "--data-dir", str(data), "--recover"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        seen = ""
        assert proc.stdout is not None
        while "set aside" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert f"recovery of {data}:" in seen and "set aside" in seen
        assert proc.poll() is None  # and then it runs (retrying an absent coordinator)
    finally:
        proc.kill()
        proc.wait()
    both = subprocess.run(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url",
         "http://127.0.0.1:9", "--data-dir", str(data), "--recover", "--reset-state"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert both.returncode == 2 and "choose one" in both.stderr
