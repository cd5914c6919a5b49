"""Attempts as real child processes: their groups, environment, timeouts, stops and results,
and those adopted after a worker restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from corral.model import AttemptOutcome
from corral.worker import _procs
from corral.worker.environ import build_env
from corral.worker.journal import AttemptRecord
from corral.worker.kinds import LaunchSpec
from corral.worker.process import AttemptProcess, Outcome, StartFailed, StopReason, launch_argv
from corral.worker.workdir import (
    attempt_dir,
    output_path,
    prepare_workdir,
    read_exit_code,
    result_path,
)

TOKEN = "wt_never_give_this_to_a_job"
PY = sys.executable


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def _until(check, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def _spawn(
    tmp_path: Path,
    code: str,
    *,
    timeout_s: float | None = None,
    grace: float = 5.0,
    worker_env: dict[str, str] | None = None,
    job_env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> AttemptProcess:
    workdir = attempt_dir(tmp_path, "j_1", 1)
    prepare_workdir(workdir)
    env = build_env(
        job_env or {},
        job_id="j_1",
        attempt=1,
        result_file=result_path(workdir),
        gpus=None,
        worker_env=worker_env if worker_env is not None else dict(os.environ),
        secrets=[TOKEN],
    )
    spec = LaunchSpec(argv=[PY, "-c", code, *(extra_args or [])], cwd=workdir)
    return await AttemptProcess.spawn(
        spec, env, workdir=workdir, timeout_s=timeout_s, kill_grace_s=grace
    )


async def test_token_never_reaches_the_job(tmp_path: Path) -> None:
    worker_env = {**os.environ, "CORRAL_WORKER_TOKEN": TOKEN, "PYTHONPATH": TOKEN}
    proc = await _spawn(
        tmp_path,
        "import json, os; print(json.dumps(dict(os.environ)))",
        worker_env=worker_env,
        job_env={"INNOCENT": f"prefix-{TOKEN}"},
    )
    outcome = await proc.wait()
    assert outcome.outcome is AttemptOutcome.SUCCEEDED
    text = output_path(proc.workdir).read_text()
    assert TOKEN not in text
    seen = json.loads(text)
    assert seen["CORRAL_JOB_ID"] == "j_1" and "CORRAL_WORKER_TOKEN" not in seen


async def test_success_reads_the_result_file_and_keeps_output(tmp_path: Path) -> None:
    code = (
        "import sys; from corral import sdk\n"
        "print('to stdout'); print('to stderr', file=sys.stderr)\n"
        "sdk.report(step=1, loss=0.5)\n"
        "sdk.set_result({'accuracy': 0.97, 'job': sdk.job_id(), 'attempt': sdk.attempt()})\n"
    )
    proc = await _spawn(tmp_path, code)
    outcome = await proc.wait()
    assert (outcome.outcome, outcome.exit_code, outcome.error) == ("succeeded", 0, None)
    assert outcome.result == {"accuracy": 0.97, "job": "j_1", "attempt": 1}
    out = output_path(proc.workdir).read_text()
    assert "to stdout" in out and "to stderr" in out
    assert 'corral.metric {"step":1,"loss":0.5}' in out
    assert proc.pgid == proc.pid and os.getpgid(0) != proc.pgid  # a group of its own


async def test_broken_result_file_does_not_fail_a_job(tmp_path: Path) -> None:
    code = "import os; open(os.environ['CORRAL_RESULT_FILE'], 'w').write('[1, 2')"
    outcome = await (await _spawn(tmp_path, code)).wait()
    assert outcome.outcome is AttemptOutcome.SUCCEEDED and outcome.result is None
    assert outcome.error and "result file" in outcome.error


async def test_failure_carries_exit_code_and_last_output(tmp_path: Path) -> None:
    code = "import sys\nfor i in range(100): print('line', i)\nsys.exit('boom: bad config')"
    outcome = await (await _spawn(tmp_path, code)).wait()
    assert (outcome.outcome, outcome.exit_code) == (AttemptOutcome.FAILED, 1)
    assert outcome.error is not None
    assert outcome.error.startswith("exited with code 1")
    assert "boom: bad config" in outcome.error and "line 99" in outcome.error
    assert "line 0\n" not in outcome.error  # only the tail


async def test_killed_by_a_signal_says_which(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    outcome = await (await _spawn(tmp_path, code)).wait()
    assert (outcome.outcome, outcome.exit_code) == (AttemptOutcome.FAILED, -signal.SIGKILL)
    assert outcome.error and "SIGKILL" in outcome.error


async def test_start_failure(tmp_path: Path) -> None:
    workdir = attempt_dir(tmp_path, "j", 1)
    prepare_workdir(workdir)
    spec = LaunchSpec(argv=["/nonexistent/program"], cwd=workdir)
    with pytest.raises(StartFailed, match="cannot start"):
        await AttemptProcess.spawn(spec, {}, workdir=workdir, timeout_s=None, kill_grace_s=1)
    for argv, why in ((["no-such-program-here"], "not found on PATH"),
                      ([str(workdir)], "Permission denied")):  # fmt: skip
        with pytest.raises(StartFailed, match=why):
            await AttemptProcess.spawn(
                LaunchSpec(argv=argv, cwd=workdir), {"PATH": "/usr/bin:/bin"},
                workdir=workdir, timeout_s=None, kill_grace_s=1,
            )  # fmt: skip


_GRANDCHILD = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
    "open('grandchild.pid', 'w').write(str(child.pid))\n"
    "print('started', flush=True)\n"
    "time.sleep(60)\n"
)


async def test_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    proc = await _spawn(tmp_path, _GRANDCHILD, timeout_s=1.0, grace=0.3)
    # The deadline counts from the spawn. Watch it only once the job (its grandchild too) is
    # up: on a loaded machine starting sh, Python and a grandchild can take longer than 1s.
    await _until(lambda: "started" in output_path(proc.workdir).read_text(), within_s=60)
    watching = time.monotonic()
    outcome = await proc.wait()
    assert time.monotonic() - watching < 5  # at its deadline, not when the job would end
    assert outcome.outcome is AttemptOutcome.TIMED_OUT
    assert outcome.error and "timeout of 1s" in outcome.error and "started" in outcome.error
    grandchild = int((proc.workdir / "grandchild.pid").read_text())
    await _until(lambda: _gone(grandchild))  # it ignored SIGTERM: SIGKILL got it
    assert _procs.group_members(proc.pgid) == []


async def test_cancel_stops_the_group(tmp_path: Path) -> None:
    proc = await _spawn(tmp_path, _GRANDCHILD, grace=0.3)
    await _until(lambda: (proc.workdir / "grandchild.pid").exists())
    proc.stop(StopReason.CANCELLED)
    outcome = await proc.wait()
    assert outcome.outcome is AttemptOutcome.CANCELLED and outcome.stopped is StopReason.CANCELLED
    grandchild = int((proc.workdir / "grandchild.pid").read_text())
    await _until(lambda: _gone(grandchild))


async def test_sigterm_first_and_a_clean_exit_is_kept(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('saving'), sys.exit(0)))\n"
        "print('ready', flush=True); time.sleep(60)\n"
    )
    proc = await _spawn(tmp_path, code, grace=10)
    await _until(lambda: "ready" in output_path(proc.workdir).read_text())
    started = time.monotonic()
    proc.stop(StopReason.CANCELLED)
    outcome = await proc.wait()
    assert time.monotonic() - started < 5  # no need to wait out the grace period
    assert outcome.outcome is AttemptOutcome.CANCELLED and outcome.exit_code == 0
    assert "saving" in output_path(proc.workdir).read_text()


async def test_force_skips_the_grace_period(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = await _spawn(tmp_path, code, grace=60)
    await _until(lambda: "ready" in output_path(proc.workdir).read_text())
    proc.stop(StopReason.SHUTDOWN)
    waiting = asyncio.ensure_future(proc.wait())
    await asyncio.sleep(0.2)
    proc.force()
    outcome = await asyncio.wait_for(waiting, 5)
    assert outcome.stopped is StopReason.SHUTDOWN and outcome.exit_code == -signal.SIGKILL


def _start_detached(
    tmp_path: Path, code: str, *, shim: bool = True
) -> tuple[subprocess.Popen[bytes], AttemptRecord]:
    """A process as a previous worker would have left it: own group, not our asyncio child.
    ``shim=False``: as a worker before exit codes were recorded started it."""
    workdir = attempt_dir(tmp_path, "j_old", 2)
    prepare_workdir(workdir)
    argv = [PY, "-c", code]
    env = {**os.environ, "CORRAL_RESULT_FILE": str(result_path(workdir))}
    child = subprocess.Popen(
        launch_argv(argv, workdir) if shim else argv, cwd=workdir, env=env, start_new_session=True
    )
    rec = AttemptRecord(
        job_id="j_old",
        attempt=2,
        pid=child.pid,
        pgid=child.pid,
        create_time=_procs.create_time(child.pid),
        workdir=workdir,
        started_at=time.time(),
    )
    return child, rec


# Adopted jobs run on only once the test has adopted them (it writes `go`), so that they are
# alive when adopted however slowly they start.
_AWAIT_GO = "import os, time\nwhile not os.path.exists('go'): time.sleep(0.01)\n"


async def _adopt_and_wait(child: subprocess.Popen[bytes], rec: AttemptRecord) -> Outcome:
    try:
        proc = AttemptProcess.adopt(rec, kill_grace_s=1)
        assert proc.adopted and proc.alive()
        (rec.workdir / "go").touch()
        # Popen is our child here; reap it so it does not linger as a zombie.
        reaper = asyncio.get_running_loop().run_in_executor(None, child.wait)
        outcome = await asyncio.wait_for(proc.wait(), 5)
        await reaper
    finally:
        child.kill()
    return outcome


async def test_adopted_attempt_that_succeeds_reports_its_result(tmp_path: Path) -> None:
    code = _AWAIT_GO + "from corral import sdk; sdk.set_result({'acc': 0.9})"
    outcome = await _adopt_and_wait(*_start_detached(tmp_path, code))
    assert (outcome.outcome, outcome.exit_code, outcome.error) == ("succeeded", 0, None)
    assert outcome.result == {"acc": 0.9}


async def test_adopted_attempt_that_fails_reports_its_exit_code(tmp_path: Path) -> None:
    code = _AWAIT_GO + "import sys; print('bad config'); sys.exit(3)"
    outcome = await _adopt_and_wait(*_start_detached(tmp_path, code))
    assert (outcome.outcome, outcome.exit_code) == (AttemptOutcome.FAILED, 3)
    assert outcome.error and outcome.error.startswith("exited with code 3")


async def test_adopted_attempt_that_ended_while_away_is_not_timed_out(tmp_path: Path) -> None:
    child, rec = _start_detached(tmp_path, "import sys; sys.exit(0)")
    child.wait()
    rec.started_at, rec.timeout_s = time.time() - 60, 10  # the worker came back too late
    outcome = await asyncio.wait_for(AttemptProcess.adopt(rec, kill_grace_s=1).wait(), 5)
    assert (outcome.outcome, outcome.exit_code) == (AttemptOutcome.SUCCEEDED, 0)


async def test_adopted_attempt_without_a_recorded_exit_is_unknown(tmp_path: Path) -> None:
    child, rec = _start_detached(tmp_path, _AWAIT_GO, shim=False)
    outcome = await _adopt_and_wait(child, rec)
    assert outcome.outcome is None and outcome.exit_code is None


async def test_the_exit_status_is_recorded_beside_the_output(tmp_path: Path) -> None:
    proc = await _spawn(tmp_path, "import sys; sys.exit(3)")
    assert (await proc.wait()).exit_code == 3
    assert read_exit_code(proc.workdir) == 3
    killed = await _spawn(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert (await killed.wait()).exit_code == -signal.SIGTERM
    assert read_exit_code(killed.workdir) == -signal.SIGTERM


async def test_argv_reaches_the_program_exactly(tmp_path: Path) -> None:
    args = ["a b", "$HOME", "'q'", '"d"', "*", "-c", "", "x;y", "`id`"]
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    proc = await _spawn(tmp_path, code, extra_args=args)
    assert (await proc.wait()).outcome is AttemptOutcome.SUCCEEDED
    assert json.loads(output_path(proc.workdir).read_text()) == args


async def test_a_program_named_like_a_shell_builtin_is_the_program(tmp_path: Path) -> None:
    workdir = attempt_dir(tmp_path, "j", 1)
    prepare_workdir(workdir)
    spec = LaunchSpec(argv=["echo", "-e", "a"], cwd=workdir)  # dash's own echo prints "-e a"
    proc = await AttemptProcess.spawn(
        spec, dict(os.environ), workdir=workdir, timeout_s=None, kill_grace_s=1
    )
    assert (await proc.wait()).outcome is AttemptOutcome.SUCCEEDED
    assert output_path(workdir).read_text() == "a\n"


def _runs_python(leader: psutil.Process, code: str) -> bool:
    """Whether the shell's child has exec'd the job: before the exec it is a fork of the shell,
    whose argv names the job's too, and it still runs the shell's trap."""
    try:
        return any(c.cmdline()[:3] == [PY, "-c", code] for c in leader.children())
    except psutil.Error:
        return False


async def test_adopted_attempt_can_be_stopped(tmp_path: Path) -> None:
    code = "import time; time.sleep(60)"
    child, rec = _start_detached(tmp_path, code)
    try:
        # As after a real restart, the job itself runs before the stop: a signal in the shell's
        # first milliseconds would kill the shell, and one between its fork and the job's exec
        # is taken by the shell's trap in the child, so only the grace period's SIGKILL ends it.
        leader = psutil.Process(child.pid)
        await _until(lambda: _runs_python(leader, code))
        # A grace long enough for a loaded machine to schedule the shell after its job died:
        # past it the group's SIGKILL would take the shell too, before it says how it ended.
        proc = AttemptProcess.adopt(rec, kill_grace_s=10)
        proc.stop(StopReason.STALE)
        reaper = asyncio.get_running_loop().run_in_executor(None, child.wait)
        outcome = await asyncio.wait_for(proc.wait(), 20)
        assert await reaper == 128 + signal.SIGTERM  # its shell outlived it to say so
    finally:
        child.kill()
    assert outcome.stopped is StopReason.STALE and outcome.exit_code == -signal.SIGTERM
