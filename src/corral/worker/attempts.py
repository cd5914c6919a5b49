"""Carry one attempt from assignment (or adoption after a restart) to its queued final report."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tarfile
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import structlog

from corral.model import AttemptOutcome
from corral.model.errors import CorralError, StaleAttempt
from corral.protocol import ArtifactView, AttemptReport, JobAssign
from corral.protocol.blobs import Mismatch
from corral.worker._disk import disk_error, low_space
from corral.worker._retry import Verdict, retrying, verdict
from corral.worker.checkpoints import CheckpointShipper, restore
from corral.worker.client import BadAnswer, TokenRefused, WorkerClient
from corral.worker.config import WorkerSettings
from corral.worker.environ import build_env
from corral.worker.envs import EnvFailed, Envs
from corral.worker.isolation import NoFreeUser, Users, hand_over, take_back
from corral.worker.journal import AttemptRecord, Journal
from corral.worker.kinds import Finished, TaskKind, UnknownKind, load_kind
from corral.worker.logship import LogShipper, LogsRefused
from corral.worker.outbox import Outbox
from corral.worker.outputs import copy, matches
from corral.worker.packages import BadPackage, Packages, unpack
from corral.worker.process import AttemptProcess, Outcome, StartFailed, StopReason
from corral.worker.results_db import ResultsDb
from corral.worker.sandbox import Sandbox
from corral.worker.warm import WarmCall, WarmPool
from corral.worker.workdir import (
    ARTIFACTS,
    AttemptFiles,
    NotItsOwn,
    attempt_dir,
    prepare_workdir,
    result_path,
    resume_dir,
)

__all__ = ["AttemptContext", "Declined", "RunningAttempt", "bug"]

log = structlog.get_logger("corral.worker.attempt")
T = TypeVar("T")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

# A finished attempt ships the rest of its output before its final report, for as long as
# batches go through; after this long without one (the coordinator is away) the report
# goes into the outbox anyway: a result must not wait on an unreachable coordinator's logs.
LOG_FLUSH_TIMEOUT_S = 15.0
# How long an attempt keeps trying to fetch its working directory or its checkpoint while
# the coordinator does not answer, before it fails.
BRING_TIMEOUT_S = 120.0


def _anything_in(files: AttemptFiles, name: str) -> bool:
    """Whether the attempt's ``.corral/name`` holds anything (one listing, on the loop)."""
    try:
        fd = files.open_dir(name)
    except (OSError, NotItsOwn):
        return False
    try:
        return bool(os.listdir(fd))
    finally:
        os.close(fd)


async def _patiently(call: Callable[[], Awaitable[T]]) -> T:
    """``call()`` until it gets through (a download that broke off starts again); what
    ``verdict`` does not call worth retrying goes out at once. A download may take as long
    as it takes while it moves (the transport's timeouts catch one that stalls); only the
    time since the first failure counts, against BRING_TIMEOUT_S (then TimeoutError)."""
    failing_since: float | None = None
    delay = 0.5
    while True:
        try:
            return await call()
        except (httpx.TransportError, Mismatch, CorralError, BadAnswer) as exc:
            if isinstance(exc, CorralError) and not isinstance(exc, Mismatch) and (
                    verdict(exc) is not Verdict.RETRY):  # fmt: skip
                raise
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > BRING_TIMEOUT_S:
                raise TimeoutError(str(exc) or type(exc).__name__) from exc
            await asyncio.sleep(delay)
            delay = min(5.0, delay * 2)


@dataclass
class AttemptContext:
    settings: WorkerSettings
    client: WorkerClient
    journal: Journal
    outbox: Outbox
    on_fatal: Callable[[TokenRefused], None]
    on_ended: Callable[[RunningAttempt], None]
    # The worker's own disk failed an attempt: it takes no new work, and says so first.
    on_constrained: Callable[[str], Awaitable[None]] | None = None
    log_interval_s: float = 0.5
    logger: Any = None  # the worker's bound logger, so attempt lines carry the worker too
    # Output still being shipped for attempts already reported (the coordinator was away).
    lingering: set[asyncio.Task[None]] = field(default_factory=set)
    warm: WarmPool | None = None  # the warm interpreters of call tasks, made on first use
    users: Users | None = None  # each attempt a uid of its own (--run-as-users)
    sandbox: Sandbox | None = None  # namespaces that hide the fleet's files (--sandbox)
    accelerator: str = "cpu"  # what its GPUs are (cuda, rocm): which variables name them
    _packages: Packages | None = None  # jobs' packed working directories, fetched once
    _tmp_made: bool = False
    _envs: Envs | None = None  # Python environments of jobs' requirements, built once
    results_db: ResultsDb | None = None  # --db-path: a local DuckDB table of its results
    on_output: Callable[[bytes], None] | None = None  # each batch of a job's output, once

    def packages(self) -> Packages:
        if self._packages is None:
            self._packages = Packages(self.settings.work_dir / "packages")
        return self._packages

    def envs(self) -> Envs:
        if self._envs is None:
            self._envs = Envs(self.settings.work_dir / "envs")
        return self._envs

    def tmp_dir(self) -> Path:
        """The worker's own scratch (checkpoints on their way), never an attempt's."""
        path = self.settings.work_dir / "tmp"
        if not self._tmp_made:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._tmp_made = True
        return path

    def warm_pool(self) -> WarmPool:
        if self.warm is None:
            user = self.users.call_user if self.users is not None else None
            self.warm = WarmPool(self.settings.max_concurrent_tasks, self.settings.work_dir,
                                 user=user, sandbox=self.sandbox)  # fmt: skip
        return self.warm

    async def close(self) -> None:
        """At the worker's exit: its warm interpreters go too, and its uids' locks."""
        if self.warm is not None:
            await self.warm.close()
        if self.users is not None:
            await self.users.close()

    def linger(self, task: asyncio.Task[None]) -> None:
        self.lingering.add(task)
        task.add_done_callback(self.lingering.discard)


@dataclass(frozen=True)
class Declined:
    """This worker cannot run the attempt (its own disk failed it): not the job's failure."""

    why: str


def bug(exc: BaseException) -> str:
    """A traceback as plain text for a log line. Not ``log.exception``: a rich renderer
    prints every frame's locals, and a frame may hold the worker token."""
    return "".join(traceback.format_exception(exc)).rstrip()


async def _until_shipped(
    shipping: asyncio.Task[None], shipper: LogShipper, stall_s: float, log: Any
) -> None:
    """Until the whole output is shipped, or no batch went through for ``stall_s``."""
    while not shipping.done():
        await asyncio.wait({shipping}, timeout=min(1.0, stall_s))
        if not shipping.done() and time.monotonic() - shipper.progress_at > stall_s:
            log.warning("logs.not_flushed", stalled_s=stall_s, shipped=shipper.offset)
            return


class RunningAttempt:
    """One attempt this worker holds a slot for, from assignment until its process is gone."""

    def __init__(
        self,
        ctx: AttemptContext,
        *,
        job_id: str,
        attempt: int,
        gpus: list[int] | None,
        assign: JobAssign | None = None,
        record: AttemptRecord | None = None,
    ) -> None:
        assert (assign is None) != (record is None)
        self.ctx = ctx
        self.job_id = job_id
        self.attempt = attempt
        self.gpus = gpus
        self.assign = assign
        self.record = record
        self.process: AttemptProcess | WarmCall | None = None
        self.kind: TaskKind | None = None  # what it runs as (not known for an adopted one)
        self.uid: int | None = None  # the user it runs as, held until its processes are gone
        self.workdir = attempt_dir(ctx.settings.work_dir, job_id, attempt)
        self.handed = False  # its directory was handed to a user (isolation)
        self.files: AttemptFiles | None = None  # its .corral, by descriptor
        self.stop_reason: StopReason | None = None
        self.task: asyncio.Task[None] | None = None
        # How it ended, for the worker's metrics: an outcome, "declined", "stopped" (the
        # coordinator moved on, or the worker stops) or "lost" (said nothing of).
        self.ended_as = "lost"
        self._constraining: asyncio.Future[None] | None = None
        self.log = (ctx.logger or log).bind(job_id=job_id, attempt=attempt)

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.attempt)

    def start(self) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self._main(), name=f"attempt {self.job_id}/{self.attempt}")
        return self.task

    def stop(self, reason: StopReason) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.log.info("attempt.stopping", reason=str(reason))
        if self.process is not None:
            self.process.stop(reason)

    def force(self) -> None:
        if self.process is not None:
            self.process.force()

    async def _main(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            self.log.error("attempt.supervisor_failed", error=bug(exc))
            # Never leave a process that nothing watches; the coordinator's lease will see the
            # attempt gone and retry the job.
            if self.process is not None and self.process.alive():
                self.process.stop(StopReason.SHUTDOWN)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.process.wait(), self.process.kill_grace_s + 10)
            with contextlib.suppress(Exception):  # a full disk may refuse this too
                self.ctx.journal.forget(self.job_id, self.attempt)
        finally:
            if self.files is not None:
                self.files.close()
            workdir = self.process.workdir if self.process is not None else self.workdir
            if self.uid is not None and self.ctx.users is not None:
                # What it left running (a daemon in a session of its own) goes with it; then
                # its directory is root's again, out of reach of the uid's next attempt.
                left = await self.ctx.users.release(self.uid, workdir)
                if left:
                    self.log.info("attempt.leftovers_killed", processes=left, uid=self.uid)
            elif self.handed:
                take_back(workdir)  # a call's: the call user runs on, for other calls
            self.ctx.on_ended(self)

    async def _run(self) -> None:
        if self.record is not None:
            self.process = AttemptProcess.adopt(
                self.record, kill_grace_s=self.ctx.settings.kill_grace_s
            )
            self.files = self.process.files
            if self.ctx.users is not None and (uid := self.ctx.users.owner_of(self.record.workdir)):
                if self.ctx.users.hold(uid):
                    self.uid = uid
            self.log.info("attempt.adopted", pid=self.process.pid)
        elif self.stop_reason is not None:  # stopped while it waited for a slot: it never ran
            why = f"stopped by the worker ({self.stop_reason}) before it started"
            self._finish(Outcome(AttemptOutcome.CANCELLED, None, why, stopped=self.stop_reason))
            return
        else:
            launched = await self._launch()
            if isinstance(launched, Declined):
                await self.decline(launched.why)
                return
            if isinstance(launched, Outcome):
                self._finish(launched)
                return
            self.process = launched
            self.log.info("attempt.started", pid=launched.pid, gpus=self.gpus)
        if self.stop_reason is not None:  # asked to stop while it was being started
            self.process.stop(self.stop_reason)

        rec = self.record
        shipper = LogShipper(
            self.process.files.output_reader(),
            attempt=self.attempt,
            send=partial(self.ctx.client.send_logs, self.job_id),
            seq=rec.log_seq if rec else 0,
            offset=rec.log_offset if rec else 0,
            resend_end=rec.log_end if rec else 0,
            on_batch=self._note_log_position,
            on_data=self.ctx.on_output,
            interval_s=self.ctx.log_interval_s,
        )
        # An adopted attempt reported running long ago.
        running = asyncio.create_task(self._report_running()) if rec is None else None
        shipping = asyncio.create_task(self._ship(shipper))
        shipping.add_done_callback(lambda _: shipper.close())  # it may outlive the attempt
        checkpoints = self._checkpoints()
        storing = asyncio.create_task(checkpoints.run()) if checkpoints is not None else None
        try:
            outcome = await self.process.wait()
        finally:
            if storing is not None and checkpoints is not None:
                storing.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await storing  # it logs its own failures; the report must still go
                if self.stop_reason is not StopReason.STALE:  # stored only while it is ours
                    await checkpoints.flush(LOG_FLUSH_TIMEOUT_S)
            shipper.finish()
            stall_s = self.ctx.settings.log_flush_stall_s
            await _until_shipped(shipping, shipper, stall_s, self.log)
            if not shipping.done():
                # The report goes now; the rest of the output follows once it can.
                self.ctx.linger(shipping)
            if running is not None:
                running.cancel()  # the final report says more than a late "running" would
        outcome = await self._as_its_kind_says(outcome)
        if outcome.outcome is AttemptOutcome.SUCCEEDED and self.assign is not None:
            await self._store_outputs(self.assign.outputs or [])
        self._finish(outcome)

    async def _as_its_kind_says(self, outcome: Outcome) -> Outcome:
        """A kind with ``finish`` decides how a process that exited on its own ended (the
        ``test`` kind: pytest's report is the result, a failed test not a failed job)."""
        finish = getattr(self.kind, "finish", None)
        ran = outcome.outcome in (AttemptOutcome.SUCCEEDED, AttemptOutcome.FAILED)
        if finish is None or not ran or outcome.stopped or outcome.exit_code is None:
            return outcome
        files = self.files
        assert files is not None

        def read(name: str, limit: int) -> bytes | None:
            try:
                return files.read(name, limit)
            except OSError:
                return None

        name = getattr(self.kind, "name", "?")
        try:
            # In a thread: a kind may read and parse megabytes (pytest's report).
            done: Finished = await asyncio.to_thread(finish, outcome.exit_code, read)
        except Exception as exc:  # a plugin's own bug: the job's end, said as it was
            self.log.error("kind.finish_failed", kind=name, error=bug(exc))
            why = f"task kind {name!r} could not tell how the job ended: {exc}"
            return replace(outcome, outcome=AttemptOutcome.FAILED, error=why)
        if done.succeeded:
            return replace(outcome, outcome=AttemptOutcome.SUCCEEDED, result=done.result,
                           error=None)  # fmt: skip
        # The process's own words (its last output) after the kind's.
        error = "; ".join(e for e in (done.error, outcome.error) if e) or None
        return replace(outcome, outcome=AttemptOutcome.FAILED, error=error)

    async def _store_outputs(self, patterns: list[str]) -> None:
        """The files it declared as outputs, and what it left in its artifact directory,
        stored before its final report, one at a time; one that cannot be stored is logged,
        and the job has still succeeded."""
        files = self.files
        assert files is not None
        if not patterns and not _anything_in(files, ARTIFACTS):
            return  # nearly always: no thread for an empty look
        owner, scratch = files.owner, self.ctx.tmp_dir()

        def top(where: str) -> int:
            return os.open(files.workdir, _DIR) if where == "." else files.open_dir(ARTIFACTS)

        def look() -> list[tuple[str, str]]:
            found = [(".", rel) for rel in matches(top("."), patterns, owner)] if patterns else []
            try:
                left = matches(top(ARTIFACTS), ["*"], owner)
            except (OSError, NotItsOwn):
                left = []
            return found + [(ARTIFACTS, rel) for rel in left]

        try:
            found = await asyncio.to_thread(look)
        except OSError as exc:
            self.log.warning("outputs.unreadable", error=str(exc))
            return
        client = self.ctx.client
        for where, rel in found:
            try:
                out = await asyncio.to_thread(copy, top(where), rel, owner, scratch)
            except (OSError, NotItsOwn) as exc:
                self.log.warning("output.not_copied", name=rel, error=str(exc))
                continue
            if out is None:
                continue
            try:
                await client.put_output(self.job_id, self.attempt, out.copy, digest=out.digest,
                                        name=out.name)  # fmt: skip
                self.log.info("output.stored", name=out.name)
            except (CorralError, httpx.HTTPError) as exc:
                self.log.warning("output.not_stored", name=out.name, error=str(exc))
            finally:
                await asyncio.to_thread(out.copy.unlink, missing_ok=True)
        if patterns and not found:
            self.log.warning("outputs.none_matched", patterns=patterns)

    def _checkpoints(self) -> CheckpointShipper | None:
        """What stores the job's checkpoints while it runs; a call (in a warm interpreter,
        many a second) has none."""
        files = self.files
        if files is None or isinstance(self.process, WarmCall):
            return None
        return CheckpointShipper(files, self._put_checkpoint, tmp_dir=self.ctx.tmp_dir(),
                                 log=self.log)  # fmt: skip

    async def _put_checkpoint(
        self, archive: Path, digest: str, step: int, name: str
    ) -> ArtifactView:
        client = self.ctx.client
        return await client.put_checkpoint(
            self.job_id, self.attempt, archive, digest=digest, step=step, name=name
        )

    def _note_log_position(self, seq: int, offset: int, end: int) -> None:
        """Where the batch in flight lies, for a restarted worker to send it again as it was.
        A full disk loses only that (a restart could then repeat some output)."""
        try:
            self.ctx.journal.set_log_position(self.job_id, self.attempt, seq, offset, end)
        except sqlite3.Error as exc:
            self.log.warning("logs.position_not_journaled", error=str(exc))

    async def _launch(self) -> AttemptProcess | WarmCall | Outcome | Declined:
        assert self.assign is not None
        settings = self.ctx.settings
        workdir = self.workdir
        if why := low_space(settings.work_dir):
            return Declined(why)
        try:
            kind = self.kind = load_kind(self.assign.kind)
            self.ctx.journal.probe()  # before anything runs: can this worker record it?
            prepare_workdir(workdir)
            # Opened while the directory is root's: what the worker reads of the attempt, it
            # reads through these, never by a name the attempt's user could swap.
            files = self.files = AttemptFiles.create(workdir)
            if (failed := await self._bring(files)) is not None:
                return failed
            spec = kind.prepare(self.assign, workdir)
            if self.assign.requirements and self.ctx.users is not None:
                return Outcome(AttemptOutcome.FAILED, None, "this worker runs jobs as users of"
                               " their own (--run-as-users) and builds no environments: its"
                               " installer would run as root; install the packages where it"
                               " was set up")  # fmt: skip
            if self.assign.requirements:
                try:
                    venv, built = await self.ctx.envs().get(self.assign.requirements)
                except EnvFailed as exc:
                    return Outcome(AttemptOutcome.FAILED, None,
                                   f"cannot install its requirements: {exc}")  # fmt: skip
                self.log.info("env.ready", env=venv.name, built=built)
                path = spec.env.get("PATH") or os.environ.get("PATH", "")
                spec.env.update(PATH=f"{venv / 'bin'}{os.pathsep}{path}", VIRTUAL_ENV=str(venv))
            warm = bool(getattr(kind, "warm", False))
            if self.ctx.users is not None:
                uid = self.ctx.users.call_user if warm else self.ctx.users.take()
                self.uid = None if warm else uid
                self.handed = True
                hand_over(workdir, uid)
                files.owner = uid
                spec.env.setdefault("HOME", str(workdir))
        except UnknownKind as exc:
            return Outcome(AttemptOutcome.FAILED, None, str(exc))
        except NoFreeUser as exc:  # some uid's processes outlived its attempt: not the job's
            return Declined(str(exc))
        except Exception as exc:  # a plugin's own error, or the disk
            if why := disk_error(exc):
                return Declined(why)
            return Outcome(AttemptOutcome.FAILED, None, f"cannot prepare the job: {exc}")
        env = build_env(
            spec.env,
            job_id=self.job_id,
            attempt=self.attempt,
            result_file=result_path(workdir),
            gpus=self.gpus,
            accelerator=self.ctx.accelerator,
            gang=self.assign.gang,
            params=self.assign.params,
            pass_env=settings.pass_env,
            secrets=settings.secrets(),
        )
        try:
            process: AttemptProcess | WarmCall
            if warm:
                # Started, not yet running: the call is sent once the journal holds it.
                pool = self.ctx.warm_pool()
                family = (tuple(sorted(spec.env.items())), tuple(self.gpus or ()))
                interp = await pool.acquire(family, spec.argv, env)
                process = WarmCall(pool, interp, self.assign, env, workdir=workdir,
                                   kill_grace_s=settings.kill_grace_s, files=files)  # fmt: skip
            else:
                process = await AttemptProcess.spawn(
                    spec,
                    env,
                    workdir=workdir,
                    timeout_s=self.assign.timeout_s,
                    kill_grace_s=settings.kill_grace_s,
                    user=self.uid,
                    files=files,
                    sandbox=self.ctx.sandbox,
                )
        except StartFailed as exc:
            return Outcome(AttemptOutcome.FAILED, None, str(exc))
        except OSError as exc:
            if why := disk_error(exc):
                return Declined(why)
            raise
        rec = AttemptRecord(
            job_id=self.job_id, attempt=self.attempt, pid=process.pid, pgid=process.pgid,
            create_time=process.create_time, workdir=workdir, started_at=process.started_at,
            timeout_s=self.assign.timeout_s, gpus=self.gpus or [],
        )  # fmt: skip
        try:
            self.ctx.journal.record_started(rec)
        except Exception as exc:
            # Unrecorded, it would outlive a restart of this worker with nobody to stop it, or
            # run on beside another attempt: it is stopped before it does anything.
            process.kill_now()
            await process.wait()
            return Declined(disk_error(exc) or f"its journal cannot record the attempt: {exc}")
        return process

    async def _bring(self, files: AttemptFiles) -> Outcome | Declined | None:
        """What the attempt starts with: its job's packed directory, unpacked where it runs,
        and, for a job run before, its newest checkpoint to resume from. A failure of
        either fails the attempt, saying what went wrong."""
        assert self.assign is not None
        client, digest, what = self.ctx.client, self.assign.workdir, "working directory"
        try:
            if digest is not None:

                async def fetch(path: Path) -> None:
                    await _patiently(partial(client.fetch_workdir, self.job_id, self.attempt,
                                             digest, path))  # fmt: skip

                archive, fetched = await self.ctx.packages().get(digest, fetch)
                count = await asyncio.to_thread(unpack, archive, files.workdir)
                self.log.info("workdir.unpacked", digest=digest[:12], files=count,
                              fetched=fetched)  # fmt: skip
            if self.attempt > 1 and self.assign.call is None:
                what = "checkpoint"
                dest = self.ctx.tmp_dir() / f"resume-{self.job_id}-{self.attempt}.tar"
                try:
                    found = await _patiently(
                        partial(client.fetch_checkpoint, self.job_id, self.attempt, dest)
                    )
                    if found is not None:
                        await asyncio.to_thread(restore, dest, resume_dir(files.workdir))
                        files.say(f"resuming from the checkpoint of step {found.step}"
                                  f" (attempt {found.attempt})")  # fmt: skip
                        self.log.info("checkpoint.restored", step=found.step,
                                      from_attempt=found.attempt)  # fmt: skip
                finally:
                    await asyncio.to_thread(dest.unlink, missing_ok=True)
        except (BadPackage, tarfile.TarError, BadAnswer) as exc:
            return Outcome(AttemptOutcome.FAILED, None, f"cannot unpack its {what}: {exc}")
        except OSError as exc:  # the worker's own disk: not the job's failure
            if why := disk_error(exc):
                return Declined(why)
            raise
        except TimeoutError:
            # Not the job's failure: said nothing of, the attempt is lost and runs again.
            return Outcome(None, None, f"cannot fetch its {what}: the coordinator did not"
                                       f" answer for {BRING_TIMEOUT_S:g}s")  # fmt: skip
        except CorralError as exc:
            why = f"cannot fetch its {what}: {exc}"
            match verdict(exc):
                case Verdict.FATAL:
                    self.ctx.on_fatal(TokenRefused(str(exc)))
                    return Outcome(None, None, why)
                case Verdict.RETRY:
                    return Outcome(None, None, why)
                case _ if isinstance(exc, StaleAttempt):  # the coordinator has moved on
                    return Outcome(AttemptOutcome.CANCELLED, None, why, stopped=StopReason.STALE)
            return Outcome(AttemptOutcome.FAILED, None, why)  # it names what is not there
        return None

    async def decline(self, why: str) -> None:
        """Say at once that this worker cannot run it, so it runs elsewhere now; it takes no
        new work until its disk has room again."""
        self.ended_as = "declined"
        self.log.error("attempt.declined", reason=why)
        if self.ctx.on_constrained is not None:
            # First, so that the coordinator does not hand the job straight back to us.
            await self.ctx.on_constrained(why)
        report = AttemptReport(attempt=self.attempt, status="declined", error=why,
                               sent_ns=time.time_ns())  # fmt: skip
        # Not in the journal (the journal may be what failed), so retried here, as long as
        # the coordinator's grace for an unclaimed attempt: past it, heartbeats that no
        # longer list the attempt have it taken back anyway.
        try:
            async with asyncio.timeout(self.ctx.settings.heartbeat_interval_s + 30):
                async for attempt in retrying(initial_s=0.5, max_s=5.0, also=(BadAnswer,)):
                    with attempt:
                        await self.ctx.client.report(self.job_id, report)
        except (CorralError, BadAnswer, TimeoutError) as exc:
            self.log.warning("report.declined_failed", error=str(exc) or "timed out")

    async def _report_running(self) -> None:
        report = AttemptReport(attempt=self.attempt, status="running", sent_ns=time.time_ns())
        try:
            # With the worker's other reports of the moment, in one call.
            await self.ctx.outbox.running(self.job_id, report)
        except (CorralError, BadAnswer) as exc:
            if isinstance(exc, CorralError) and verdict(exc) is not Verdict.RETRY:
                self._refused(exc, "report.running_refused")
            else:
                # Not retried: the final report is, and the coordinator accepts it straight
                # after the assignment too.
                self.log.warning("report.running_failed", error=str(exc))

    async def _ship(self, shipper: LogShipper) -> None:
        # Not after the running report, which may wait for a call on its way (see
        # Outbox.running): the coordinator takes an attempt's output once it is assigned.
        try:
            await shipper.run()
        except LogsRefused as exc:
            self._refused(exc.error, "logs.refused")

    def _refused(self, exc: CorralError, event: str) -> None:
        match verdict(exc):
            case Verdict.FATAL:
                self.ctx.on_fatal(TokenRefused(str(exc)))
            case Verdict.DROP:  # stale_attempt, or the job is gone
                self.log.warning(event, error=str(exc), action="stopping the stale attempt")
                self.stop(StopReason.STALE)
            case _:
                self.log.warning(event, error=str(exc))

    def _finish(self, outcome: Outcome) -> None:
        if outcome.stopped in (StopReason.STALE, StopReason.SHUTDOWN):
            # Stale: the coordinator has moved on. Shutdown: the job is lost with this worker
            # and retried elsewhere; calling it "cancelled" would end the job for good.
            self.ctx.journal.forget(self.job_id, self.attempt)
            self.ended_as = "stopped"
            self.log.info("attempt.dropped", reason=str(outcome.stopped))
            return
        if outcome.outcome is None:
            # Reporting "failed" would end the job for good, though it may have succeeded.
            # Said nothing of, and listed in no heartbeat, it is lost and runs again.
            self.ctx.journal.forget(self.job_id, self.attempt)
            self.log.warning("attempt.outcome_unknown", error=outcome.error)
            return
        status: AttemptOutcome | Literal["declined"] = outcome.outcome
        error = outcome.error
        if status is AttemptOutcome.FAILED and (full := low_space(self.ctx.settings.work_dir)):
            # Its output had nowhere to go: not the job's failure, so it runs again elsewhere.
            status, error = "declined", f"{full} as it ran; {error}"
        self.ended_as = str(status)
        report = AttemptReport(
            sent_ns=time.time_ns(),
            attempt=self.attempt,
            status=status,
            exit_code=outcome.exit_code,
            error=error,
            result=outcome.result,
        )
        try:
            self.ctx.journal.finish(self.job_id, self.attempt, report)
        except Exception as exc:
            if (why := disk_error(exc)) is None:
                raise
            # The job ran and ended: its result still goes, from memory, and the worker
            # takes no new work until its disk has room.
            self.log.error("attempt.report_not_journaled", reason=why)
            self.ctx.outbox.keep(self.job_id, self.attempt, report)
            if self.ctx.on_constrained is not None:
                self._constraining = asyncio.ensure_future(self.ctx.on_constrained(why))
        self.ctx.outbox.wake()
        if self.ctx.results_db is not None:
            self.ctx.linger(asyncio.create_task(self.ctx.results_db.record(
                job_id=self.job_id, attempt=self.attempt,
                name=self.assign.name if self.assign else "", kind=getattr(self.kind, "name", ""),
                outcome=str(status), exit_code=outcome.exit_code,
                started_at=self.process.started_at if self.process else None,
                result=outcome.result, error=error)))  # fmt: skip
        self.log.info(
            "attempt.ended",
            status=outcome.outcome,
            exit_code=outcome.exit_code,
            duration_s=round(time.time() - self.process.started_at, 3) if self.process else 0,
        )
