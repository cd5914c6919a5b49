"""How a worker (re)joins its coordinator: what a previous worker process left running,
what results it still owes, and the register call that tells the coordinator both."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast

from corral.model.errors import CorralError, StaleRegistration
from corral.protocol import Accelerator, AttemptRef, RegisterRequest, RegisterResponse
from corral.worker import _procs
from corral.worker._retry import Verdict, retrying, verdict
from corral.worker.client import BadAnswer, TokenRefused, WorkerClient
from corral.worker.config import WorkerSettings
from corral.worker.hardware import Hardware
from corral.worker.journal import AttemptRecord, Journal
from corral.worker.outbox import Outbox
from corral.worker.warm import is_warm
from corral.worker.workdir import read_exit_code

__all__ = ["RegistrationRefused", "recover", "register"]

_SETTLE_S = 5.0  # before register: how long to try delivering owed final reports first


class RegistrationRefused(Exception):
    """The coordinator refused to register this worker (a 4xx other than 401/403, 408, 429)."""


def recover(journal: Journal, log: Any) -> dict[tuple[str, int], AttemptRecord]:
    """Attempts a previous worker process left, to offer at register and adopt.

    Those still running, and those that ended meanwhile with their exit status recorded
    (they are reported as they ended, with the rest of their log). Those that ended without
    one are dropped: the coordinator, which does not hear of them, counts them lost and
    retries the job.
    """
    adoptable: dict[tuple[str, int], AttemptRecord] = {}
    for rec in journal.attempts():
        bound = log.bind(job_id=rec.job_id, attempt=rec.attempt)
        if is_warm(rec.workdir):
            # A call in a warm interpreter: nothing to adopt it from (its interpreter died
            # with the worker, or is stopped here), so it is lost and runs again.
            if _procs.group_is_ours(rec.pgid, rec.create_time):
                _procs.signal_group(rec.pgid, signal.SIGKILL)
            bound.warning("attempt.call_not_adoptable", hint="the coordinator retries it")
            journal.forget(rec.job_id, rec.attempt)
            continue
        if _procs.leader_alive(rec.pid, rec.create_time):
            adoptable[rec.key] = rec
            continue
        # The leader is gone; what is left of its group are orphans holding memory or a GPU.
        if _procs.group_is_ours(rec.pgid, rec.create_time) and _procs.signal_group(
            rec.pgid, signal.SIGKILL
        ):
            bound.warning("attempt.orphans_killed", pgid=rec.pgid)
        code = read_exit_code(rec.workdir)
        if code is not None:
            bound.info("attempt.ended_while_away", exit_code=code)
            adoptable[rec.key] = rec
            continue
        bound.warning("attempt.ended_while_away", hint="no exit status: the coordinator retries it")
        journal.forget(rec.job_id, rec.attempt)
    return adoptable


async def register(
    client: WorkerClient,
    *,
    settings: WorkerSettings,
    machine: Hardware,
    journal: Journal,
    outbox: Outbox,
    running: list[AttemptRef],
    log: Any,
    constrained: str | None = None,
) -> RegisterResponse:
    """Register, retrying with backoff while the coordinator is away.

    Raises TokenRefused (401/403) or RegistrationRefused (another 4xx: retrying cannot help).
    """
    try:
        async for attempt in retrying(
            initial_s=1.0,
            max_s=30.0,
            # A newer registration of ours was taken (its clock stepped back?): say it again.
            also=(BadAnswer, StaleRegistration),
            on_retry=lambda exc: log.warning("register.failed", error=str(exc)),
        ):
            with attempt:
                # Deliver what is owed before saying what runs: a coordinator that hears of an
                # attempt in neither counts it lost, and then refuses its result.
                await _settle(outbox)
                req = _request(settings, machine, journal, running)
                update = {"constrained": constrained, "sent_ns": time.time_ns()}
                resp = await client.register(req.model_copy(update=update))
    except CorralError as exc:
        # A label its admin did not allow (403 naming labels.*) is this worker's settings,
        # not its token.
        said_labels = (exc.field or "").startswith("labels")
        if verdict(exc) is Verdict.FATAL and not said_labels:
            raise TokenRefused(str(exc)) from exc
        raise RegistrationRefused(str(exc)) from exc
    return resp


def _request(
    settings: WorkerSettings, machine: Hardware, journal: Journal, running: list[AttemptRef]
) -> RegisterRequest:
    return RegisterRequest(
        name=settings.worker_name,
        hostname=machine.hostname,
        cpu_count=machine.cpu_count,
        memory_bytes=machine.memory_bytes,
        cpu_model=machine.cpu_model[:200],
        accelerator=cast(Accelerator, machine.accelerator),
        gpus=machine.gpus,
        memory_buffer=settings.memory_buffer,
        labels=settings.labels_with_tags,
        slots=settings.max_concurrent_tasks,
        prefetch=settings.call_prefetch,
        persistent=settings.persistent,
        # Ended attempts whose report is not through yet are offered too, so that a keep
        # holds them current until the report lands.
        running=journal.claimed((r.job_id, r.attempt) for r in running),
        version=_version(),
    )


async def _settle(outbox: Outbox) -> None:
    if outbox.empty:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_SETTLE_S):
            await outbox.deliver_pending()


def _version() -> str:
    try:
        return version("corral")
    except PackageNotFoundError:
        return ""
