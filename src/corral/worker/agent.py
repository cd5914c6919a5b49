"""The worker's life: register, take jobs over SSE, beat, deliver results, leave cleanly.

Exit codes: 0 after a normal end (an ephemeral worker's job is done, a drain, SIGTERM or
SIGINT); 2 when the configuration cannot work (token refused, registration refused, data
directory unusable or held by another worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import httpx
import structlog
from httpx_sse import SSEError

from corral.config import harden as _harden
from corral.model import WorkerStatus
from corral.model.errors import CorralError, Unauthenticated
from corral.protocol import (
    CALL_KIND,
    AttemptRef,
    HeartbeatResponse,
    JobAssign,
    JobCancel,
    RegisterResponse,
    WorkerDrain,
)
from corral.protocol.transport import Transport, insecure
from corral.worker import _join, _serving, guard, hardware, identity
from corral.worker._retry import Backoff, Verdict, retrying, verdict
from corral.worker.attempts import LOG_FLUSH_TIMEOUT_S, AttemptContext, RunningAttempt, bug
from corral.worker.client import TokenRefused, WorkerClient
from corral.worker.config import WorkerSettings
from corral.worker.heartbeat import Heartbeat
from corral.worker.isolation import Users, UsersUnavailable, open_path
from corral.worker.journal import AttemptRecord, Journal, JournalBusy
from corral.worker.monitor import LocalView, Monitor, RunningView, bare_url
from corral.worker.outbox import Outbox
from corral.worker.process import StopReason
from corral.worker.results_db import ResultsDb
from corral.worker.sandbox import Sandbox
from corral.worker.sandbox import available as sandbox_available
from corral.worker.workdir import attempt_dir, prune_workdirs

__all__ = ["Agent", "run_worker"]

log = structlog.get_logger("corral.worker")

EXIT_OK = 0
EXIT_CONFIG = 2
_FINAL_FLUSH_S = 15.0  # at shutdown: how long to keep trying to deliver final reports
_DISCONNECT_S = 5.0
_STABLE_STREAM_S = 10.0  # a stream that lived this long resets the reconnect backoff
KEEP_ATTEMPT_DIRS = 20  # finished attempts' directories kept for a look after the fact


async def run_worker(settings: WorkerSettings) -> int:
    """Run a worker until it is done; returns the process exit code.

    The token is in ``settings`` by now: it leaves the process environment, and the process
    becomes undumpable, so that no job can read it from this process (``_harden``)."""
    _harden.hide_token_from_jobs()
    return await Agent(settings).run()


class _Leave(Exception):
    """Raised inside the task group to end it."""


class Agent:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        client: WorkerClient | None = None,
        machine: hardware.Hardware | None = None,
        log_interval_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.machine = machine or hardware.detect(settings.gpu_ids)
        self._tls: dict[str, Any] = {"ca_file": settings.ca_file,
                                     "verify": not settings.ssl_no_verify}  # fmt: skip
        # A worker without a token proves itself with a certificate, enrolled in ``run``.
        self.signer = identity.SignedAuth() if settings.worker_token is None else None
        if client is None and self.signer is not None:
            client = WorkerClient(Transport(settings.orchestrator_url, auth=self.signer,
                                            **self._tls))  # fmt: skip
        elif client is None:
            assert settings.worker_token is not None
            client = WorkerClient.for_token(settings.orchestrator_url,
                                            settings.worker_token.get_secret_value(),
                                            **self._tls)  # fmt: skip
        self.client = client
        self.pool = hardware.GpuPool([g.index for g in self.machine.gpus])
        self.log_interval_s = log_interval_s
        self.worker_id: str | None = None
        self.log = log.bind(worker=settings.worker_name)
        # Every attempt it holds: those running, and those waiting for a slot (``_waiting``).
        self.running: dict[tuple[str, int], RunningAttempt] = {}
        # Call tasks handed to it beyond its slots (``prefetch``), started in order as slots
        # free: the next starts the moment one ends, not a round trip to the coordinator later.
        self._waiting: deque[RunningAttempt] = deque()
        self._seen: set[tuple[str, int]] = set()  # attempts taken by this process
        self._accepting = True
        self._draining = False
        self._took_job = False
        self._last_event_id: str | None = None
        self._registered = asyncio.Event()
        self._reregister = asyncio.Event()
        self._exit = asyncio.Event()
        self._exit_code = EXIT_OK
        self._kill_on_exit = False
        self._signals = 0
        self._pruning: asyncio.Task[int] | None = None
        self._declining: set[asyncio.Task[None]] = set()
        self._stream_base: str | None = None  # the coordinator its open stream is on
        self.paused = False  # as the coordinator last said: its page's answer, a heartbeat's
        self.monitor = Monitor(self.view)  # its /metrics and /health (--metrics-port)

    # ---- lifecycle -------------------------------------------------------------------

    def _users(self) -> Users | str | None:
        """``--run-as-users``: the pool, or why it cannot be used."""
        uids = self.settings.users
        if uids is None:
            return None
        if os.geteuid() != 0:
            return "--run-as-users needs the worker to run as root (it starts jobs as others)"
        work = self.settings.work_dir
        try:
            blocked = open_path(work, work / "attempts")
        except OSError as exc:
            return f"cannot open {work} to the attempts' users: {exc}"
        if blocked:
            return blocked
        # The uids the attempts it will adopt ran as: this worker's again, if still free.
        owners = set()
        for rec in self.journal.attempts():
            with contextlib.suppress(OSError):
                owners.add(rec.workdir.stat().st_uid)
        try:
            users = Users.claim(uids, self.settings.max_concurrent_tasks + 1, prefer=owners)
        except UsersUnavailable as exc:
            return str(exc)
        self.log.info("worker.run_as_users", first=uids[0], last=uids[-1],
                      call_user=users.call_user, attempt_uids=users.attempt_uids)  # fmt: skip
        return users

    async def _sandbox(self) -> Sandbox | str | None:
        """``--sandbox``: the namespaces attempts start in, or why they cannot (``on``); with
        ``auto`` a machine that does not allow them runs attempts without, and says so."""
        mode = self.settings.sandbox
        if mode == "off":
            return None
        why = await asyncio.to_thread(sandbox_available)
        if why is None:
            hidden = [str(p) for p in (self.settings.work_dir, *self.settings.sandbox_hide)]
            self.log.info("worker.sandbox", hidden=hidden)
            return Sandbox(self.settings.work_dir, self.settings.sandbox_hide)
        if mode == "on":
            return f"--sandbox on: {why}"
        hint = "jobs run without namespaces: they can read this user's files"
        self.log.warning("worker.no_sandbox", reason=why, hint=hint)
        return None

    async def run(self) -> int:
        for said in insecure(self.settings.orchestrator_url, not self.settings.ssl_no_verify):
            self.log.warning("worker.insecure", detail=said)
        if (missing := self.settings.missing_credentials()) is not None:
            self.log.error("worker.no_credentials", error=missing)
            await self.client.aclose()
            return EXIT_CONFIG
        try:
            self.journal = Journal(self.settings.work_dir)
        except (JournalBusy, OSError) as exc:
            self.log.error("worker.data_dir_unusable", error=str(exc))
            await self.client.aclose()
            return EXIT_CONFIG
        if self.signer is not None and not await self._enrol():
            self.journal.close()
            await self.client.aclose()
            return EXIT_CONFIG
        sandbox = await self._sandbox()
        if isinstance(sandbox, str):
            self.log.error("worker.sandbox_unavailable", error=sandbox)
            self.journal.close()
            await self.client.aclose()
            return EXIT_CONFIG
        users = self._users()
        if isinstance(users, str):
            self.log.error("worker.run_as_users_unusable", error=users)
            self.journal.close()
            await self.client.aclose()
            return EXIT_CONFIG
        self.outbox = Outbox(self.journal, self.client, on_change=self._check_exit)
        self.heartbeat = Heartbeat(
            self.client, self.journal, self.settings.work_dir,
            interval_s=self.settings.heartbeat_interval_s,
            held=lambda: [*self.running, *self.outbox.unjournaled],
            on_answer=self._on_heartbeat, on_unknown=self._reregister.set, log=self.log,
        )  # fmt: skip
        self.ctx = AttemptContext(
            settings=self.settings,
            client=self.client,
            journal=self.journal,
            outbox=self.outbox,
            on_fatal=self._fatal,
            on_ended=self._ended,
            on_constrained=self.heartbeat.constrain,
            log_interval_s=self.log_interval_s,
            logger=self.log,
            users=users,
            sandbox=sandbox,
            accelerator=self.machine.accelerator,
            results_db=ResultsDb(self.settings.db_path) if self.settings.db_path else None,
            on_output=self.monitor.output,
        )
        opened = _serving.open_servers(self.settings, self.monitor, view=self.view,
                                       pause=self.set_paused, log=self.log)  # fmt: skip
        if isinstance(opened, str):
            self.log.error("worker.cannot_listen", error=opened)
            self.journal.close()
            await self.client.aclose()
            return EXIT_CONFIG
        servers, tail = opened
        installed = self._install_signals()
        try:
            if tail is not None:
                tail.attach()
            for server in servers:
                server.start()
            await self._main()
        finally:
            for server in servers:  # after the shutdown: its page says "stopping" until then
                await server.stop()
            if tail is not None:
                tail.detach()
            for sig in installed:
                asyncio.get_running_loop().remove_signal_handler(sig)
            await self.ctx.close()
            await self.client.aclose()
            self.journal.close()
        self.log.info("worker.exit", code=self._exit_code)
        return self._exit_code

    def view(self) -> LocalView:
        """What it knows of itself now: for its /health, /metrics and page."""
        hb: Heartbeat | None = getattr(self, "heartbeat", None)
        constrained = hb.constrained if hb is not None else None
        connected = self._registered.is_set() and self._stream_base is not None
        running = [RunningView(ra.job_id, ra.attempt, ra.assign.name if ra.assign else None,
                               ra.process.started_at if ra.process else None,
                               ra.process.pid if ra.process else None)
                   for ra in self.running.values() if ra.task is not None]  # fmt: skip
        if self._exit.is_set():
            status = "stopping"
        elif not connected:
            status = "connecting"
        elif self._draining:
            status = WorkerStatus.DRAINING.value
        elif self.paused:
            status = WorkerStatus.PAUSED.value
        elif constrained is not None:
            status = WorkerStatus.CONSTRAINED.value
        else:
            status = (WorkerStatus.BUSY if running else WorkerStatus.IDLE).value
        held = self.signer.held if self.signer is not None else None
        return LocalView(
            name=self.settings.worker_name, worker_id=self.worker_id, status=status,
            connected=connected, coordinator_url=bare_url(self.client.transport.current),
            running=running, last_heartbeat=hb.answered_at if hb is not None else None,
            paused=self.paused, constrained=constrained,
            certificate_expires_at=held.expires_at if held is not None else None,
            gpus=[g.index for g in self.machine.gpus] if self.machine.accelerator == "cuda" else [],
        )  # fmt: skip

    async def set_paused(self, paused: bool) -> bool:
        """Its page's Pause / Resume: the coordinator sends it no new work (or again)."""
        answer = await self.client.pause(paused)
        self.paused = answer.paused
        self.log.info("worker.paused" if self.paused else "worker.resumed", by="its page")
        return self.paused

    def request_stop(self) -> None:
        """What SIGTERM does: take nothing more, stop what runs, report, disconnect, exit 0."""
        self._leave(EXIT_OK, kill=True)

    async def _main(self) -> None:
        adoptable = _join.recover(self.journal, self.log)
        for rec in adoptable.values():
            self.pool.claim(rec.gpus)
        if (users := self.ctx.users) is not None:
            # Nothing a previous worker left (attempts dropped above, their daemons) runs on
            # under a uid this one gives out.
            await users.start(u for r in adoptable.values() if (u := users.owner_of(r.workdir)))
        self._prune(adoptable)
        self.log.info(
            "worker.starting",
            urls=self.settings.urls,
            slots=self.settings.max_concurrent_tasks,
            persistent=self.settings.persistent,
            adoptable=len(adoptable),
            **hardware.summary(self.machine),
        )
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._stream_loop(adoptable), name="stream")
                tg.create_task(self._heartbeat_loop(), name="heartbeat")
                tg.create_task(self._outbox_loop(), name="outbox")
                limits = guard.Limits(
                    self.settings.max_cpu_percent,
                    self.settings.max_memory_percent,
                    self.settings.max_gpu_percent,
                    self.settings.cooldown_s,
                )
                if limits.any():
                    tg.create_task(self.heartbeat.guard(guard.Guard(limits), self.pool.indices),
                                   name="guard")  # fmt: skip
                tg.create_task(self._wait_exit(), name="exit")
                if self.signer is not None:
                    tg.create_task(self._renew(), name="renew")
        except* _Leave:
            pass
        except* TokenRefused as group:
            self.log.error(
                "worker.token_refused",
                error=str(group.exceptions[0]),
                hint="the token is wrong or was rotated; start the worker with the current one",
            )
            self._exit_code, self._kill_on_exit = EXIT_CONFIG, True
        except* _join.RegistrationRefused as group:
            self.log.error("worker.registration_refused", error=str(group.exceptions[0]))
            self._exit_code, self._kill_on_exit = EXIT_CONFIG, True
        await self._shutdown()

    async def _enrol(self) -> bool:
        """The certificate to sign with: held, renewed, or enrolled for now; retried while
        the coordinator is away. False (said why) when it is refused."""
        assert self.signer is not None
        try:
            said = lambda exc: self.log.warning("enrol.failed", error=str(exc))  # noqa: E731
            async for attempt in retrying(initial_s=1.0, max_s=30.0, on_retry=said):
                with attempt:
                    held = await identity.ensure(self.settings, self._tls)
        except (identity.EnrolmentRefused, CorralError, OSError) as exc:
            self.log.error("worker.enrolment_refused", error=str(exc))
            return False
        self.signer.held = held
        self.log.info("worker.enrolled", worker_id=held.worker_id,
                      certificate_expires_at=held.expires_at.isoformat())  # fmt: skip
        return True

    async def _renew(self) -> None:
        assert self.signer is not None and self.signer.held is not None
        try:
            await identity.renew_loop(self.settings, self.signer.held, self._tls)
        except Unauthenticated as exc:
            raise TokenRefused(f"the certificate's renewal was refused: {exc}") from exc

    async def _wait_exit(self) -> None:
        await self._exit.wait()
        raise _Leave

    def _leave(self, code: int, *, kill: bool) -> None:
        self._accepting = False
        self._exit_code = max(self._exit_code, code)
        self._kill_on_exit = self._kill_on_exit or kill
        self._exit.set()

    def _fatal(self, exc: TokenRefused) -> None:
        self.log.error("worker.token_refused", error=str(exc))
        self._leave(EXIT_CONFIG, kill=True)

    async def _shutdown(self) -> None:
        self._accepting = False
        if self._kill_on_exit:
            for ra in list(self.running.values()):
                self._stop(ra, StopReason.SHUTDOWN)
        tasks = [ra.task for ra in self.running.values() if ra.task is not None]
        if tasks:
            self.log.info("worker.stopping_attempts", count=len(tasks))
            await asyncio.wait(tasks, timeout=self.settings.kill_grace_s + LOG_FLUSH_TIMEOUT_S + 10)
        for task in list(self.ctx.lingering):  # output of reported attempts: not waited for
            task.cancel()
        if self._pruning is not None:
            await asyncio.wait({self._pruning}, timeout=10)
        if self._exit_code == EXIT_CONFIG:
            return  # the coordinator will not listen to this token: say nothing more
        with contextlib.suppress(TimeoutError, TokenRefused):
            async with asyncio.timeout(_FINAL_FLUSH_S):
                await self.outbox.deliver_pending()
        if not self.outbox.empty:
            self.log.warning("worker.reports_kept", hint="they are sent when the worker is back")
        try:
            async with asyncio.timeout(_DISCONNECT_S):
                await self.client.disconnect()
        except (TimeoutError, CorralError) as exc:
            self.log.warning("worker.disconnect_failed", error=str(exc))

    def _check_exit(self) -> None:
        """An ephemeral worker leaves once its job (or a drain) is over and reported."""
        if self._exit.is_set() or self.settings.persistent or self.running:
            return
        if (self._took_job or self._draining) and self.outbox.empty:
            self.log.info("worker.done", reason="drained" if self._draining else "job ended")
            self._leave(EXIT_OK, kill=False)

    def _install_signals(self) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread (tests): request_stop() is the way in
            installed.append(sig)
        return installed

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            self.log.info("worker.signal", signal=sig.name, action="stopping")
            self.request_stop()
        else:
            self.log.warning("worker.signal", signal=sig.name, action="killing now")
            for ra in self.running.values():
                ra.force()

    # ---- registration and the stream -----------------------------------------------------

    def _apply_register(
        self, resp: RegisterResponse, adoptable: dict[tuple[str, int], AttemptRecord]
    ) -> None:
        self.worker_id = resp.worker_id
        self.log = log.bind(worker=resp.name, worker_id=resp.worker_id)
        self.ctx.logger = self.heartbeat.log = self.log
        if "heartbeat_interval_s" not in self.settings.model_fields_set:
            self.heartbeat.interval_s = max(1.0, resp.heartbeat_interval_s)
        if resp.heartbeat_timeout_s:
            # One slow request, then a fail-over, must fit inside the coordinator's patience.
            self.client.transport.limit_timeout(resp.heartbeat_timeout_s / 3)
            beat = self.heartbeat.interval_s
            if beat * 2 > resp.heartbeat_timeout_s:
                self.log.warning("settings.conflict", heartbeat_interval_s=beat,
                                 coordinator_heartbeat_timeout_s=resp.heartbeat_timeout_s,
                                 hint="a missed beat gets this worker reaped")  # fmt: skip
        keep = {(r.job_id, r.attempt) for r in resp.keep}
        for key, rec in adoptable.items():
            ra = RunningAttempt(
                self.ctx,
                job_id=rec.job_id,
                attempt=rec.attempt,
                gpus=rec.gpus if self.pool.total else None,
                record=rec,
            )
            self.running[key] = ra
            self._seen.add(key)
            if key in keep:
                self._took_job = True
            else:
                ra.stop(StopReason.STALE)
            ra.start()
        for key, ra in list(self.running.items()):
            if key not in keep:
                self._stop(ra, StopReason.STALE)
        self.log.info("worker.registered", keep=len(resp.keep), stop=len(resp.stop))
        self._registered.set()

    async def _stream_loop(self, adoptable: dict[tuple[str, int], AttemptRecord]) -> None:
        # Not stamina: this loop never ends, and a stream that lived a while starts the
        # backoff again (a coordinator restarted once a day must not cost 30 s each time).
        backoff = Backoff(0.5, 30.0)
        while True:
            held = [*adoptable, *self.running, *self.outbox.unjournaled]
            offered = [AttemptRef(job_id=j, attempt=a) for j, a in held]
            resp = await _join.register(
                self.client,
                settings=self.settings,
                machine=self.machine,
                journal=self.journal,
                outbox=self.outbox,
                running=offered,
                log=self.log,
                constrained=self.heartbeat.constrained,
            )
            self._apply_register(resp, adoptable)
            adoptable = {}
            self._reregister.clear()
            opened = time.monotonic()
            try:
                await self._stream_until_dropped()
                self.log.info("stream.ended")
            except CorralError as exc:
                if (why := verdict(exc)) is Verdict.FATAL:
                    raise TokenRefused(str(exc)) from exc
                event = "stream.dropped" if why is Verdict.RETRY else "stream.refused"
                self.log.warning(event, error=str(exc))
            except (httpx.HTTPError, SSEError) as exc:
                self.log.warning("stream.dropped", error=str(exc) or type(exc).__name__)
                if isinstance(exc, httpx.TimeoutException) and self._stream_base:
                    # Silent past its pings: that coordinator no longer answers (frozen, or
                    # a link that swallows packets). All of our traffic moves on.
                    self.client.transport.demote(self._stream_base)
            self._stream_base = None
            if time.monotonic() - opened >= _STABLE_STREAM_S:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    async def _stream_until_dropped(self) -> None:
        """Read events until the stream ends, or a heartbeat finds us unknown (register again)."""
        consume = asyncio.create_task(self._consume_stream())
        reregister = asyncio.create_task(self._reregister.wait())
        try:
            await asyncio.wait({consume, reregister}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (consume, reregister):
                task.cancel()
            await asyncio.wait({consume, reregister})
        if not consume.cancelled():
            consume.result()  # raises what ended it

    async def _consume_stream(self) -> None:
        async with self.client.events(self._last_event_id) as events:
            self._stream_base = self.client.transport.current
            self.log.info("stream.open", url=self._stream_base, last_event_id=self._last_event_id)
            async for item in events:
                if item.id:
                    self._last_event_id = item.id
                try:
                    self._handle(item.event)
                except Exception as exc:
                    # One event this worker cannot act on must not end its stream; the
                    # coordinator's lease takes back whatever it failed to start.
                    self.log.error("stream.event_failed", type=item.event.type, error=bug(exc))

    def _handle(self, event: JobAssign | JobCancel | WorkerDrain) -> None:
        if isinstance(event, JobAssign):
            self._on_assign(event)
        elif isinstance(event, JobCancel):
            ra = self.running.get((event.job_id, event.attempt))
            if ra is None:
                self.log.info("cancel.not_running", job_id=event.job_id, attempt=event.attempt)
            else:
                self._stop(ra, StopReason.CANCELLED)
        else:
            self._drain()

    def _drain(self) -> None:
        if not self._draining:
            self.log.info("worker.draining", running=len(self.running))
        self._draining = True
        self._accepting = False
        self._check_exit()

    def _on_assign(self, a: JobAssign) -> None:
        if (cap := self.settings.task_timeout_s) is not None and (a.timeout_s or cap) >= cap:
            a = a.model_copy(update={"timeout_s": cap})  # the longest this worker runs one
        key = (a.job_id, a.attempt)
        bound = self.log.bind(job_id=a.job_id, attempt=a.attempt)
        if key in self.running or key in self._seen or self.journal.has_report(*key):
            bound.info("assign.duplicate")  # a resend after reconnect: we have it already
            return
        if self.heartbeat.constrained is not None:
            ra = RunningAttempt(self.ctx, job_id=a.job_id, attempt=a.attempt, gpus=None, assign=a)
            self._decline(ra, self.heartbeat.constrained)
            return
        if not self._accepting:
            # Say nothing: the coordinator takes the job back when its lease runs out or
            # when this worker disconnects.
            bound.warning("assign.declined", reason="draining" if self._draining else "done")
            return
        for other in list(self.running.values()):
            if other.job_id == a.job_id and other.attempt < a.attempt:
                self._stop(other, StopReason.STALE)  # a newer attempt of the job supersedes it
        busy = self._busy()
        wait = busy >= self.settings.max_concurrent_tasks
        if wait and not self._may_wait(a):
            bound.warning("assign.declined", reason="no free slot", running=busy,
                          waiting=len(self._waiting))  # fmt: skip
            return
        gpus: list[int] | None = None  # None: it knows no GPUs here (CUDA_VISIBLE_DEVICES kept)
        if self.pool.total or a.gpus:
            # The coordinator chose them; an older one only counted, and then it takes any.
            if a.gpu_ids is None:
                gpus = self.pool.take(a.gpus)
            elif len(a.gpu_ids) >= a.gpus and self.pool.take_these(a.gpu_ids):
                gpus = list(a.gpu_ids)
            if gpus is None:
                why = (f"GPUs {a.gpu_ids} are not all free here" if a.gpu_ids
                       else f"{a.gpus} GPUs are not free here")  # fmt: skip
                bound.warning("assign.declined", reason=why, gpus=a.gpus)
                self._decline(RunningAttempt(self.ctx, job_id=a.job_id, attempt=a.attempt,
                                             gpus=None, assign=a), why)  # fmt: skip
                return
        if a.gang is not None and a.gang.rank == 0 and not _port_free(a.gang.master_port):
            # Its gang meets here: at a port in use it never would. The next attempt has another.
            if gpus:
                self.pool.give_back(gpus)
            why = f"port {a.gang.master_port} for its gang is in use here"
            bound.warning("assign.declined", reason=why)
            self._decline(RunningAttempt(self.ctx, job_id=a.job_id, attempt=a.attempt,
                                         gpus=None, assign=a), why)  # fmt: skip
            return
        self._seen.add(key)
        self._took_job = True
        ra = RunningAttempt(self.ctx, job_id=a.job_id, attempt=a.attempt, gpus=gpus, assign=a)
        self.running[key] = ra
        if wait:
            self._waiting.append(ra)
        else:
            ra.start()

    def _decline(self, ra: RunningAttempt, why: str) -> None:
        """Tell the coordinator it cannot run this: the job runs again elsewhere."""
        task = asyncio.create_task(ra.decline(why))
        self._declining.add(task)
        task.add_done_callback(self._declining.discard)

    def _busy(self) -> int:
        """Slots in use: attempts started and not superseded."""
        return sum(1 for ra in self.running.values()
                   if ra.task is not None and ra.stop_reason is not StopReason.STALE)  # fmt: skip

    def _may_wait(self, a: JobAssign) -> bool:
        """May this assignment wait here for a slot (the coordinator's rule, ``prefetch``)?"""
        return (
            a.kind == CALL_KIND and not a.gpus and self.settings.persistent
            and len(self._waiting) < self.settings.call_prefetch
        )  # fmt: skip

    def _stop(self, ra: RunningAttempt, reason: StopReason) -> None:
        ra.stop(reason)
        if ra.task is None:  # it waited for a slot: it ends now, without having run
            with contextlib.suppress(ValueError):
                self._waiting.remove(ra)
            ra.start()

    def _start_waiting(self) -> None:
        while self._waiting and self._busy() < self.settings.max_concurrent_tasks:
            self._waiting.popleft().start()

    def _ended(self, ra: RunningAttempt) -> None:
        self.running.pop(ra.key, None)
        self.monitor.ended(ra.ended_as,
                           time.time() - ra.process.started_at if ra.process else None)  # fmt: skip
        if ra.gpus:
            self.pool.give_back(ra.gpus)
        self._start_waiting()
        self._prune()
        if not self.settings.persistent and self._took_job:
            self._accepting = False  # ephemeral: one job, then leave
        self._check_exit()

    def _prune(self, extra_active: Iterable[tuple[str, int]] = ()) -> None:
        if self._pruning is not None and not self._pruning.done():
            return
        root = self.settings.work_dir
        active = {attempt_dir(root, j, a) for j, a in {*self.running, *extra_active}}
        self._pruning = asyncio.create_task(
            asyncio.to_thread(
                prune_workdirs, root / "attempts", keep=KEEP_ATTEMPT_DIRS, active=active
            )
        )

    # ---- heartbeats and reports --------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        await self._registered.wait()
        await self.heartbeat.run()

    def _on_heartbeat(self, resp: HeartbeatResponse) -> None:
        now = self.client.transport.current
        if self._stream_base is not None and now != self._stream_base:
            # The heartbeat failed over to another coordinator: the stream follows it, so
            # that the coordinator that hears this worker is the one that can send it work.
            self.log.info("stream.moving", to=now, frm=self._stream_base)
            self._reregister.set()
        for ref in resp.stop:
            ra = self.running.get((ref.job_id, ref.attempt))
            if ra is not None:
                self._stop(ra, StopReason.STALE)
        # Paused by its admin or its page, as the coordinator has it (one that says only its
        # stored status never says paused).
        self.paused = resp.status is WorkerStatus.PAUSED
        if resp.status is WorkerStatus.DRAINING:
            self._drain()  # in case the drain event was missed
        elif resp.status is WorkerStatus.OFFLINE:
            self._reregister.set()  # the coordinator gave up on us: come back properly

    async def _outbox_loop(self) -> None:
        await self._registered.wait()
        await self.outbox.run()


def _port_free(port: int) -> bool:
    """May a process here listen on ``port`` (as torch.distributed's rank 0 will)?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True
