"""One attempt as a child process: its own process group, working directory and environment.

Output goes to ``.corral/output.log`` in the working directory rather than a pipe, so that a
job outlives a worker restart (a pipe whose reader died kills the writer with SIGPIPE) and
the new worker can go on shipping the log from where the old one stopped. For the same
reason the job's exit status goes to ``.corral/exit_code``: a worker started again finds its
predecessor's jobs still running, and they are not its children, so the kernel would never
tell it how they ended.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from corral.protocol import unstorable
from corral.sdk import ENV_ATTEMPT, ENV_JOB_ID, ENV_RESULT_FILE
from corral.worker import _procs
from corral.worker.journal import AttemptRecord
from corral.worker.kinds import LaunchSpec

__all__ = [
    "ALLOWED_ENV",
    "AttemptProcess",
    "Outcome",
    "StartFailed",
    "StopReason",
    "attempt_dir",
    "build_env",
    "exit_code_path",
    "launch_argv",
    "output_path",
    "prepare_workdir",
    "prune_workdirs",
    "read_exit_code",
    "result_path",
]

# What a job inherits from the worker. Anything else (the worker token above all, cloud
# credentials, the operator's shell) stays behind; a job that needs more asks for it in its
# own env, or the operator names it in ``pass_env``.
ALLOWED_ENV = frozenset(
    {
        "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM",
        "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_PATH",
        "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    }
)  # fmt: skip
ALLOWED_PREFIXES = ("LC_",)
_TAIL_BYTES = 16 * 1024
_TAIL_LINES = 40
_MAX_ERROR = 8_000
_MAX_RESULT_BYTES = 1024 * 1024
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


# "unknown": an adopted attempt ended and left no exit status (it was started before this
# version, or killed with its shell); it is not reported, so the coordinator retries it.
Status = Literal["succeeded", "failed", "timed_out", "cancelled", "unknown"]


@dataclass(frozen=True)
class Outcome:
    status: Status
    exit_code: int | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    stopped: StopReason | None = None  # set when the worker killed it on request


class StartFailed(Exception):
    """The process could not be started (no such program, not executable...)."""


def attempt_dir(data_dir: Path, job_id: str, attempt: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", job_id).lstrip(".") or "job"
    return data_dir / "attempts" / f"{safe}-{attempt}"


def output_path(workdir: Path) -> Path:
    return workdir / ".corral" / "output.log"


def result_path(workdir: Path) -> Path:
    return workdir / ".corral" / "result.json"


def exit_code_path(workdir: Path) -> Path:
    return workdir / ".corral" / "exit_code"


def launch_argv(argv: list[str], workdir: Path) -> list[str]:
    """``argv`` wrapped in the shell that records its exit status (see ``_SHIM``)."""
    env = "/usr/bin/env" if os.access("/usr/bin/env", os.X_OK) else shutil.which("env") or "env"
    return [_SHELL, "-c", _SHIM, "corral-attempt", str(exit_code_path(workdir)), env, "--", *argv]


def read_exit_code(workdir: Path) -> int | None:
    """The exit status the attempt's shell recorded, as a return code (negative: killed by
    that signal); None when there is none to read."""
    try:
        text = exit_code_path(workdir).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return _from_shell(int(text)) if text.isdigit() else None


def _from_shell(status: int) -> int:
    # A shell says 128+N for a command killed by signal N, and cannot tell that from a
    # command that exited 128+N itself; the signal is by far the likelier.
    if 128 < status < 128 + signal.NSIG:
        return -(status - 128)
    return status


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


def prepare_workdir(workdir: Path) -> None:
    """A fresh, empty directory: leftovers of an earlier try must not look like this one's."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / ".corral").mkdir(parents=True)


def build_env(
    job_env: Mapping[str, str],
    *,
    job_id: str,
    attempt: int,
    result_file: Path,
    gpus: list[int] | None,
    worker_env: Mapping[str, str] | None = None,
    pass_env: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> dict[str, str]:
    """The job's environment: allow-listed worker vars < the job's env < Corral's own vars.

    ``gpus`` None leaves CUDA_VISIBLE_DEVICES alone (a machine without NVML); a list, even an
    empty one, pins the job to exactly those GPUs so that jobs running side by side never
    share one. Any value holding a secret is dropped, whatever put it there.
    """
    source = os.environ if worker_env is None else worker_env
    extra = set(pass_env)
    env = {
        k: v
        for k, v in source.items()
        if (k in ALLOWED_ENV or k.startswith(ALLOWED_PREFIXES) or k in extra)
        and not k.startswith("CORRAL_")
    }
    env["PYTHONUNBUFFERED"] = "1"  # so output (and sdk.report lines) arrive as they happen
    if gpus is None and "CUDA_VISIBLE_DEVICES" in source:
        # GPUs this worker cannot see through NVML: keep whatever limit its operator set.
        env["CUDA_VISIBLE_DEVICES"] = source["CUDA_VISIBLE_DEVICES"]
    env.update(job_env)
    env[ENV_JOB_ID] = job_id
    env[ENV_ATTEMPT] = str(attempt)
    env[ENV_RESULT_FILE] = str(result_file)
    if gpus is not None:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # the order NVML numbers them in
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
    hidden = [s for s in secrets if s]
    return {k: v for k, v in env.items() if not any(s in v or s in k for s in hidden)}


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
        child: asyncio.subprocess.Process | None = None,
    ) -> None:
        self.pid = pid
        self.pgid = pid  # start_new_session: the leader's pid names the group
        self.create_time = create_time
        self.workdir = workdir
        self.timeout_s = timeout_s
        self.started_at = started_at
        self.kill_grace_s = kill_grace_s
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
    ) -> AttemptProcess:
        _check_program(spec.argv[0], env, spec.cwd)
        started_at = time.time()
        with output_path(workdir).open("ab") as out:
            try:
                child = await asyncio.create_subprocess_exec(
                    *launch_argv(spec.argv, workdir),
                    cwd=spec.cwd,
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
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
            child=child,
        )

    @classmethod
    def adopt(cls, rec: AttemptRecord, *, kill_grace_s: float) -> AttemptProcess:
        """Watch an attempt a previous worker process started; it is not our child."""
        return cls(
            pid=rec.pid,
            create_time=rec.create_time,
            workdir=rec.workdir,
            timeout_s=rec.timeout_s,
            started_at=rec.started_at,
            kill_grace_s=kill_grace_s,
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
            return _from_shell(code) if code > 0 else code
        # Not our child, so no event tells us it exited: poll, then read what its shell wrote.
        while _procs.leader_alive(self.pid, self.create_time):  # noqa: ASYNC110
            await asyncio.sleep(_ADOPTED_POLL_S)
        return read_exit_code(self.workdir)

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
                "timed_out",
                code,
                _error(f"ran past its timeout of {self.timeout_s:g}s; stopped", self.workdir),
            )
        if self._signalled and self.stop_reason is not None:
            return Outcome(
                "cancelled",
                code,
                f"stopped by the worker ({self.stop_reason})",
                stopped=self.stop_reason,
            )
        if code is None:
            return Outcome(
                "unknown",
                None,
                "the worker restarted while this attempt ran, and it left no exit status",
            )
        if code == 0:
            result, problem = _read_result(result_path(self.workdir))
            return Outcome("succeeded", 0, problem, result)
        if code < 0:
            try:
                what = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                what = f"was killed by signal {-code}"
            return Outcome("failed", code, _error(what, self.workdir))
        return Outcome("failed", code, _error(f"exited with code {code}", self.workdir))


def _error(what: str, workdir: Path) -> str:
    tail = output_tail(workdir)
    text = f"{what}; last output:\n{tail}" if tail else what
    return text[-_MAX_ERROR:]


def prune_workdirs(root: Path, *, keep: int, active: set[Path]) -> int:
    """Remove all but the ``keep`` newest attempt directories not in ``active``; returns how
    many went. A persistent worker runs thousands of jobs; their directories must not fill
    the disk. Blocking (rmtree): call it in a thread."""
    try:
        dirs = [d for d in root.iterdir() if d.is_dir() and d not in active]
    except FileNotFoundError:
        return 0
    dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return max(0, len(dirs) - keep)


def output_tail(workdir: Path, lines: int = _TAIL_LINES) -> str:
    """The last lines the job printed, for the error of a failed attempt."""
    try:
        with output_path(workdir).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:])


def _read_result(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(result, problem): a job that exits 0 succeeded even if its result file is broken."""
    try:
        if path.stat().st_size > _MAX_RESULT_BYTES:
            return None, f"result file larger than {_MAX_RESULT_BYTES} bytes; ignored"
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"result file unreadable; ignored: {exc}"
    if not isinstance(data, dict):
        return None, "result file does not hold a JSON object; ignored"
    if why := unstorable(data):  # the coordinator would refuse the whole report
        return None, f"result file ignored: {why}"
    return data, None
