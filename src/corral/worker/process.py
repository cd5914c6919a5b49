"""One attempt as a child process: its own process group, led by a shell that records how
the job ended, and how the worker starts, adopts, waits for and stops it.

The job writes to a file in its working directory (``workdir``), not a pipe, so that it
outlives a worker restart (a pipe whose reader died kills the writer with SIGPIPE). A worker
started again finds its predecessor's jobs still running; they are not its children, so the
kernel would never tell it how they ended: the leader shell writes the exit status beside
the output for it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from corral.model import AttemptOutcome
from corral.worker import _procs
from corral.worker.isolation import as_user
from corral.worker.journal import AttemptRecord
from corral.worker.kinds import LaunchSpec
from corral.worker.sandbox import Sandbox
from corral.worker.workdir import AttemptFiles, exit_code_path, from_shell_status

__all__ = ["AttemptProcess", "Outcome", "StartFailed", "StopReason", "launch_argv"]

_MAX_ERROR = 8_000
_ADOPTED_POLL_S = 0.2
_GROUP_POLL_S = 0.1


# The group leader of every attempt: a shell that runs the job and then writes its exit
# status to a file, so that a worker that restarted while the job ran can still report how it
# ended. Not `exec`: the shell has to outlive the job to write the file. It traps TERM, INT and
# HUP with a no-op, so a stop or timeout (which signal the whole group) does not end it before
# the job has: it waits for the job, records its status and exits with it. The job itself
# starts with those signals at their defaults (a handled signal is reset on exec, unlike an
# ignored one), so it sees SIGTERM as it would without the shell. The argv arrives as "$@",
# never spliced into the script, and through `env`, so that a command called `echo` or `exit`
# is that program rather than a shell builtin.
_SHIM = """f=$1; shift
trap : TERM INT HUP
"$@"
c=$?
printf '%s\\n' "$c" > "$f"
exit "$c"
"""
_SHELL = "/bin/sh"


class StopReason(StrEnum):
    CANCELLED = "cancelled"  # the coordinator cancelled the job: reported as cancelled
    STALE = "stale"  # no longer the current attempt: killed, not reported
    SHUTDOWN = "shutdown"  # the worker is leaving: killed, not reported (the job is lost)


@dataclass(frozen=True)
class Outcome:
    # None: unknown. An adopted attempt ended and left no exit status (started before this
    # version, or killed with its shell); it is not reported, so the coordinator retries it.
    outcome: AttemptOutcome | None
    exit_code: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    stopped: StopReason | None = None  # set when the worker killed it on request


class StartFailed(Exception):
    """The process could not be started (no such program, not executable...)."""


def launch_argv(argv: list[str], workdir: Path) -> list[str]:
    """``argv`` wrapped in the shell that records its exit status (see ``_SHIM``)."""
    env = "/usr/bin/env" if os.access("/usr/bin/env", os.X_OK) else shutil.which("env") or "env"
    return [_SHELL, "-c", _SHIM, "corral-attempt", str(exit_code_path(workdir)), env, "--", *argv]


def _check_program(argv0: str, env: Mapping[str, str], cwd: Path) -> None:
    """Raise StartFailed for a program that cannot start: the shell in front of it would only
    exit 127 after the fact, and a job that cannot start should say so plainly."""
    if "/" in argv0:
        path = Path(argv0) if os.path.isabs(argv0) else cwd / argv0
        if not path.exists():
            raise StartFailed(f"cannot start {argv0!r}: {os.strerror(errno.ENOENT)}")
        if not path.is_file() or not os.access(path, os.X_OK):
            raise StartFailed(f"cannot start {argv0!r}: {os.strerror(errno.EACCES)}")
    elif shutil.which(argv0, path=env.get("PATH", os.defpath)) is None:
        raise StartFailed(f"cannot start {argv0!r}: not found on PATH")


class AttemptProcess:
    """A running attempt: started here (``spawn``) or found alive after a restart (``adopt``)."""

    def __init__(
        self,
        *,
        pid: int,
        create_time: float,
        workdir: Path,
        timeout_s: float | None,
        started_at: float,
        kill_grace_s: float,
        files: AttemptFiles,
        child: asyncio.subprocess.Process | None = None,
    ) -> None:
        self.pid = pid
        self.pgid = pid  # start_new_session: the leader's pid names the group
        self.create_time = create_time
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.started_at = started_at
        self.kill_grace_s = kill_grace_s
        self.files = files  # what it leaves for the worker, read by descriptor (workdir)
        self._child = child
        self._timeout_at = (
            None if timeout_s is None else time.monotonic() + timeout_s - (time.time() - started_at)
        )
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self.stop_reason: StopReason | None = None
        self._signalled = False

    @classmethod
    async def spawn(
        cls,
        spec: LaunchSpec,
        env: Mapping[str, str],
        *,
        workdir: Path,
        timeout_s: float | None,
        kill_grace_s: float,
        user: int | None = None,
        files: AttemptFiles | None = None,
        sandbox: Sandbox | None = None,
    ) -> AttemptProcess:
        """``user``: the uid (and group) it runs as, with no other groups (isolation).
        ``files``: its ``.corral``, opened before ``workdir`` was handed to ``user``.
        ``sandbox``: started in namespaces that hide the fleet's files (worker.sandbox)."""
        _check_program(spec.argv[0], env, spec.cwd)
        given, files = files is not None, files or AttemptFiles.create(workdir)
        started_at = time.time()
        try:
            with os.fdopen(files.appender(), "ab") as out:
                argv = launch_argv(spec.argv, workdir)
                if sandbox is not None:
                    argv = sandbox.command(argv, attempt_dir=workdir, cwd=spec.cwd, user=user)
                child = await asyncio.create_subprocess_exec(
                    *argv,
                    cwd=spec.cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    **as_user(user),
                )
        except BaseException as exc:
            if not given:
                files.close()
            if not isinstance(exc, OSError):
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise StartFailed(
                f"cannot start {spec.argv[0]!r}: {exc.strerror or exc}{where}"
            ) from exc
        return cls(
            pid=child.pid,
            create_time=_procs.create_time(child.pid),
            workdir=workdir,
            timeout_s=timeout_s,
            started_at=started_at,
            kill_grace_s=kill_grace_s,
            files=files,
            child=child,
        )

    @classmethod
    def adopt(cls, rec: AttemptRecord, *, kill_grace_s: float) -> AttemptProcess:
        """Watch an attempt a previous worker process started; it is not our child. Its files
        are opened anew, held to its user as they were when it started (``AttemptFiles``)."""
        return cls(
            pid=rec.pid,
            create_time=rec.create_time,
            workdir=rec.workdir,
            timeout_s=rec.timeout_s,
            started_at=rec.started_at,
            kill_grace_s=kill_grace_s,
            files=AttemptFiles.open(rec.workdir),
        )

    @property
    def adopted(self) -> bool:
        return self._child is None

    def alive(self) -> bool:
        if self._child is not None:
            return self._child.returncode is None
        return _procs.leader_alive(self.pid, self.create_time)

    def stop(self, reason: StopReason) -> None:
        """Ask it to end: SIGTERM to the group, then SIGKILL after the grace period."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def kill_now(self) -> None:
        """SIGKILL the whole group, no grace: it must not run at all (``wait`` reaps it)."""
        self.stop_reason = self.stop_reason or StopReason.SHUTDOWN
        self._signalled = True
        _procs.signal_group(self.pgid, signal.SIGKILL)

    def force(self) -> None:
        """Skip what is left of the grace period (a second Ctrl-C)."""
        self._force.set()

    async def wait(self) -> Outcome:
        exit_task = asyncio.ensure_future(self._wait_exit())
        stop_task = asyncio.ensure_future(self._stop.wait())
        timed_out = False
        try:
            timeout = None
            # One that ended while no worker watched it (adopted) ended on its own, even if its
            # deadline has passed since.
            if self._timeout_at is not None and self.alive():
                timeout = max(0.0, self._timeout_at - time.monotonic())
            done, _ = await asyncio.wait(
                {exit_task, stop_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if exit_task not in done:
                timed_out = stop_task not in done
                await self._terminate(exit_task)
            code = await exit_task
        finally:
            for task in (exit_task, stop_task):
                task.cancel()
        # Whatever the job left behind in its group (a forgotten background process holding a
        # GPU) goes with it. An adopted leader may have ended long ago: make sure its group id
        # was not handed on.
        if not self.adopted or _procs.group_is_ours(self.pgid, self.create_time):
            _procs.signal_group(self.pgid, signal.SIGKILL)
        return self._outcome(code, timed_out)

    async def _wait_exit(self) -> int | None:
        """The job's exit code; None when it cannot be known (an adopted attempt whose shell
        recorded none)."""
        if self._child is not None:
            code = await self._child.wait()  # the shell's: the job's status, or its own death
            return from_shell_status(code) if code > 0 else code
        # Not our child, so no event tells us it exited: poll, then read what its shell wrote.
        while _procs.leader_alive(self.pid, self.create_time):  # noqa: ASYNC110
            await asyncio.sleep(_ADOPTED_POLL_S)
        return self.files.exit_code()

    async def _terminate(self, exit_task: asyncio.Future[int | None]) -> None:
        self._signalled = True
        _procs.signal_group(self.pgid, signal.SIGTERM)
        deadline = time.monotonic() + self.kill_grace_s
        force_task: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
        try:
            # First the leader, then anything else in its group, each until the grace ends.
            remaining = deadline - time.monotonic()
            if remaining > 0:
                waiting: set[asyncio.Future[Any]] = {exit_task, force_task}
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            while (  # noqa: ASYNC110 - grandchildren exiting raise no event here
                exit_task.done()
                and not self._force.is_set()
                and time.monotonic() < deadline
                and _procs.group_members(self.pgid)
            ):
                await asyncio.sleep(_GROUP_POLL_S)
        finally:
            force_task.cancel()
        _procs.signal_group(self.pgid, signal.SIGKILL)

    def _outcome(self, code: int | None, timed_out: bool) -> Outcome:
        if timed_out:
            return Outcome(
                AttemptOutcome.TIMED_OUT,
                code,
                _error(f"ran past its timeout of {self.timeout_s:g}s; stopped", self.files),
            )
        if self._signalled and self.stop_reason is not None:
            return Outcome(
                AttemptOutcome.CANCELLED,
                code,
                f"stopped by the worker ({self.stop_reason})",
                stopped=self.stop_reason,
            )
        if code is None:
            return Outcome(
                None,
                None,
                "the worker restarted while this attempt ran, and it left no exit status",
            )
        if code == 0:
            result, problem = self.files.result()
            return Outcome(AttemptOutcome.SUCCEEDED, 0, problem, result)
        if code < 0:
            try:
                what = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"was killed by signal {-code}"
            return Outcome(AttemptOutcome.FAILED, code, _error(what, self.files))
        return Outcome(AttemptOutcome.FAILED, code, _error(f"exited with code {code}", self.files))


def _error(what: str, files: AttemptFiles) -> str:
    tail = files.output_tail()
    text = f"{what}; last output:\n{tail}" if tail else what
    return text[-_MAX_ERROR:]
