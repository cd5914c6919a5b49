"""Warm interpreters: the worker keeps, per slot, a Python process (``warm_loop``) that runs
call tasks one after another, so that a small task costs a message, not a process start.

An interpreter is kept for the next task of the same family (the job's env and GPUs: what
it was started with and may have loaded, a model on a GPU); one whose task crashed it, ran
past its timeout or was cancelled is killed, and the next task starts a fresh one. A task's
prints go to its attempt's output file, shipped as a command's output is.

A restarted worker cannot adopt a call that was running: the interpreter dies with the
worker that started it, and recovery (``_join.recover``) drops the attempt, so the
coordinator counts it lost and runs it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import struct
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from corral.model import AttemptOutcome
from corral.protocol import JobAssign, unstorable
from corral.worker import _procs
from corral.worker.isolation import as_user
from corral.worker.process import Outcome, StartFailed, StopReason
from corral.worker.sandbox import Sandbox
from corral.worker.workdir import AttemptFiles, output_path

__all__ = ["Interpreter", "WarmCall", "WarmPool", "is_warm"]

_HEADER = struct.Struct(">I")
_READY_S = 60.0  # a fresh interpreter must say it is ready within this (imports on a slow disk)
_MAX_ERROR = 8_000
_MARKER = "warm"  # in an attempt's .corral/: its process was a warm interpreter


def is_warm(workdir: Path) -> bool:
    """Was the attempt in ``workdir`` a call in a warm interpreter (it cannot be adopted)?"""
    with AttemptFiles.open(workdir) as files:
        return files.has(_MARKER)


class Interpreter:
    """One warm interpreter, the leader of its own process group."""

    def __init__(self, proc: asyncio.subprocess.Process, family: Any) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.create_time = _procs.create_time(proc.pid)
        self.family = family
        self.tasks = 0

    @classmethod
    async def start(
        cls, argv: list[str], env: Mapping[str, str], *, cwd: Path, family: Any,
        user: int | None = None,
    ) -> Interpreter:  # fmt: skip
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=cwd, env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, start_new_session=True, **as_user(user),
            )  # fmt: skip
        except OSError as exc:
            raise StartFailed(f"cannot start a Python interpreter ({argv[0]}): {exc}") from exc
        interp = cls(proc, family)
        try:
            ready = await asyncio.wait_for(interp._receive(), _READY_S)
        except TimeoutError:
            ready = None
        if not ready:
            interp.kill()
            await proc.wait()
            raise StartFailed(f"the warm interpreter did not start (exit status {proc.returncode})")
        return interp

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def _receive(self) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        try:
            head = await self.proc.stdout.readexactly(_HEADER.size)
            body = await self.proc.stdout.readexactly(_HEADER.unpack(head)[0])
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        doc = json.loads(body)
        return doc if isinstance(doc, dict) else None

    async def request(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Its answer, or None when it died first."""
        assert self.proc.stdin is not None
        data = json.dumps(doc).encode()
        try:
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)
            await self.proc.stdin.drain()
        except (ConnectionError, RuntimeError):
            return None
        self.tasks += 1
        return await self._receive()

    def kill(self) -> None:
        """SIGKILL it and whatever its task started (its group)."""
        if self.alive or _procs.group_members(self.pid):
            _procs.signal_group(self.pid, signal.SIGKILL)

    async def ended(self) -> int:
        code = await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        return code


class WarmPool:
    """At most ``capacity`` interpreters (the worker's slots), busy and idle together."""

    def __init__(
        self, capacity: int, home: Path, user: int | None = None, sandbox: Sandbox | None = None
    ) -> None:
        self.capacity = capacity
        self.home = home  # an interpreter's working directory between tasks
        self.user = user  # the uid its interpreters run as (isolation.Users.call_user)
        # In a sandbox an interpreter sees the attempts' directories (its calls come and go
        # there) and nothing else of the worker's.
        self.sandbox = sandbox
        self._idle: list[Interpreter] = []
        self._busy = 0
        self._reaping: set[asyncio.Task[int]] = set()
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def acquire(self, family: Any, argv: list[str], env: Mapping[str, str]) -> Interpreter:
        """An idle interpreter of this family, else a new one (an idle one of another family
        makes room)."""
        if self._closed:
            raise StartFailed("the worker is shutting down")
        self._idle = [i for i in self._idle if i.alive or self._discard(i)]
        for interp in reversed(self._idle):
            if interp.family == family:
                self._idle.remove(interp)
                self._busy += 1
                return interp
        while self._idle and len(self._idle) + self._busy >= self.capacity:
            self._discard(self._idle.pop(0))  # the least recently used
        self._busy += 1
        try:
            if self.sandbox is not None:
                attempts = self.home / "attempts"
                argv = self.sandbox.command(argv, attempt_dir=attempts, cwd=attempts,
                                            user=self.user)  # fmt: skip
            return await Interpreter.start(argv, env, cwd=self.home, family=family,
                                           user=self.user)  # fmt: skip
        except BaseException:
            self._busy -= 1
            raise

    def release(self, interp: Interpreter, *, keep: bool) -> None:
        self._busy -= 1
        if keep and interp.alive and not self._closed:
            self._idle.append(interp)
        else:
            self._discard(interp)

    def _discard(self, interp: Interpreter) -> bool:
        interp.kill()
        task = asyncio.ensure_future(interp.ended())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)
        return False

    async def close(self) -> None:
        self._closed = True
        for interp in self._idle:
            self._discard(interp)
        self._idle.clear()
        if self._reaping:
            await asyncio.wait(set(self._reaping), timeout=10)


class WarmCall:
    """One call task in an interpreter, with the face of an ``AttemptProcess`` (the attempt's
    supervisor stops, waits for and journals it the same way)."""

    adopted = False

    def __init__(
        self, pool: WarmPool, interp: Interpreter, assign: JobAssign, env: Mapping[str, str],
        *, workdir: Path, kill_grace_s: float, files: AttemptFiles | None = None,
    ) -> None:  # fmt: skip
        assert assign.call is not None
        self.pool = pool
        self.interp = interp
        self.pid = self.pgid = interp.pid
        self.create_time = interp.create_time
        self.workdir = workdir
        # Its output, read by descriptor: the interpreter's user shares it with other calls.
        self.files = files or AttemptFiles.create(workdir)
        self.timeout_s = assign.timeout_s
        self.kill_grace_s = kill_grace_s
        self.started_at = time.time()
        self.stop_reason: StopReason | None = None
        self._stop = asyncio.Event()
        self._done = False
        self._killed = False
        self._request = {
            "op": "run", "call": assign.call.model_dump(mode="json"), "env": dict(env),
            "cwd": str(workdir), "output": str(output_path(workdir)),
        }  # fmt: skip
        self.files.mark(_MARKER)

    def alive(self) -> bool:
        return not self._done and self.interp.alive

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def kill_now(self) -> None:
        self.stop_reason = self.stop_reason or StopReason.SHUTDOWN
        self._killed = True
        self.interp.kill()
        self._stop.set()

    def force(self) -> None:
        """A call is killed at once when stopped: there is no grace period to cut short."""

    async def wait(self) -> Outcome:
        try:
            return await self._wait()
        finally:
            self._done = True

    async def _wait(self) -> Outcome:
        if self._stop.is_set():  # stopped before it ran: the interpreter is still clean
            self.pool.release(self.interp, keep=not self._killed)
            return self._stopped()
        answer = asyncio.ensure_future(self.interp.request(self._request))
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait(
                {answer, stop}, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stop.cancel()
        if answer not in done:
            # Stopped or out of time in the middle of the call: Python cannot be made to
            # give up a call half-way safely, so the interpreter goes, and a fresh one
            # serves the next task.
            self.interp.kill()
            await answer
            await self.interp.ended()
            self.pool.release(self.interp, keep=False)
            if stop in done:
                return self._stopped()
            why = f"ran past its timeout of {self.timeout_s:g}s; its interpreter was replaced"
            return Outcome(AttemptOutcome.TIMED_OUT, None, self._error(why))
        reply = answer.result()
        if reply is None:
            code = await self.interp.ended()
            self.pool.release(self.interp, keep=False)
            return Outcome(AttemptOutcome.FAILED, code, self._error(_died(code)))
        self.pool.release(self.interp, keep=True)
        if not reply.get("ok"):
            return Outcome(AttemptOutcome.FAILED, None, str(reply.get("error"))[-_MAX_ERROR:])
        result = json.loads(reply["value"])
        if problem := unstorable(result):
            return Outcome(AttemptOutcome.FAILED, None, f"the call's return value: {problem}")
        return Outcome(AttemptOutcome.SUCCEEDED, 0, None, result)

    def _stopped(self) -> Outcome:
        why = f"stopped by the worker ({self.stop_reason})"
        return Outcome(AttemptOutcome.CANCELLED, None, why, stopped=self.stop_reason)

    def _error(self, what: str) -> str:
        tail = self.files.output_tail()
        text = f"{what}; last output:\n{tail}" if tail else what
        return text[-_MAX_ERROR:]


def _died(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"its interpreter was killed by {signal.Signals(-code).name} during the call"
        return f"its interpreter was killed by signal {-code} during the call"
    return f"its interpreter exited with code {code} during the call"
