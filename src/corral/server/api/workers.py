"""Worker endpoints, SimpleTuner's paths: register, stream, heartbeat, status, disconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, Security
from fastapi.security import APIKeyHeader
from fastapi.sse import EventSourceResponse, ServerSentEvent

from corral.model import InvalidInput, Unauthenticated
from corral.protocol import (
    AttemptReport,
    CertificateRequest,
    Enrolled,
    HeartbeatRequest,
    HeartbeatResponse,
    LogBatch,
    RegisterRequest,
    RegisterResponse,
    ReportAck,
    ReportBatch,
    ReportBatchAck,
    WorkerPause,
    signing,
)
from corral.server import enrolment, fleet, jobs
from corral.server.auth import Worker, WorkerIdentity
from corral.server.hub import wait
from corral.store import streams

router = APIRouter(prefix="/api/workers", tags=["workers"])
# A ping this often tells a worker its coordinator still answers (it gives up on a stream
# silent for a few of these and moves to another coordinator); the outbox is read on every
# wake-up and, as the fallback for a lost one, at least every POLL_S.
PING_S = 5.0
POLL_S = 30.0


_registration = APIKeyHeader(
    name=signing.REGISTRATION_TOKEN_HEADER, scheme_name="RegistrationToken", auto_error=False,
    description="single-use, from POST /api/admin/workers/registrations",
)  # fmt: skip


async def _registration_token(
    request: Request, token: Annotated[str | None, Security(_registration)]
) -> str:
    # A dependency, so that a request without one is a 401 before its body is looked at.
    request.app.state.core.refusals.check(request.client.host if request.client else None)
    if not token:
        raise Unauthenticated(
            f"a registration token is required: {signing.REGISTRATION_TOKEN_HEADER}"
        )
    return token


@router.post("/enrol", response_model=Enrolled, status_code=201)
async def enrol(
    request: Request,
    token: Annotated[str, Depends(_registration_token)],
    body: CertificateRequest,
) -> Enrolled:
    """Trade a registration token and a CSR for the worker's own Ed25519 key for a client
    certificate; from then on the worker signs each request with that key."""
    return await enrolment.enrol(request.app.state.core, token, body)


@router.post("/renew", response_model=Enrolled)
async def renew(request: Request, worker: Worker, body: CertificateRequest) -> Enrolled:
    """A new certificate for the key the worker enrolled with, before its certificate ends."""
    return await enrolment.renew(request.app.state.core, worker, body)


@router.post("/register", response_model=RegisterResponse)
async def register(request: Request, worker: Worker, body: RegisterRequest) -> RegisterResponse:
    address = request.client.host if request.client else None
    return await fleet.register(request.app.state.core, worker, body, address)


def _last_event_id(
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> int:
    # A dependency, so a bad header is a 422 before the event stream starts.
    try:
        after = int(last_event_id or 0)
        if not 0 <= after < 2**63:
            raise ValueError(after)
    except ValueError as exc:
        raise InvalidInput("Last-Event-ID must be an event id", field="Last-Event-ID") from exc
    return after


async def _registered(request: Request, worker: Worker) -> WorkerIdentity:
    # A dependency, so a worker that never registered gets its 409 before the stream starts.
    await fleet.check_registered(request.app.state.core, worker)
    return replace(worker, nonce=None)  # its nonce is used up by that check


@router.get(
    "/stream",
    response_class=EventSourceResponse,
    description="SSE: `job.assign`, `job.cancel`, `worker.drain`; ids resume with Last-Event-ID.",
    responses={409: {"description": "not_registered: register first"}},
)
async def stream(
    request: Request,
    worker: Annotated[WorkerIdentity, Depends(_registered)],
    after: Annotated[int, Depends(_last_event_id)],
) -> AsyncIterator[ServerSentEvent]:
    core = request.app.state.core
    wid = worker.worker_id
    session = core.hub.open_stream(wid)
    try:
        if not await fleet.stream_opened(core, worker, session):
            return  # reaped since the check: it registers again
        signal, read_at = None, 0.0
        while not core.hub.is_closed(session):
            loop = asyncio.get_running_loop()
            if signal is None or signal.is_set() or loop.time() - read_at >= POLL_S:
                signal, read_at = core.hub.workers.watch(wid), loop.time()
                async with core.store.tx() as conn:
                    rows = await streams.events_after(conn, wid, after)
                for r in rows:
                    after = r["id"]
                    yield ServerSentEvent(data=r["data"], event=r["type"], id=str(r["id"]))
                if len(rows) == streams.EVENTS_PAGE:
                    # There may be more: read again at once. Else what came since the
                    # read has set the signal.
                    signal = None
                    continue
            await wait(signal, PING_S)
            if not signal.is_set():
                yield ServerSentEvent(comment="ping")
    finally:
        # A dropped stream makes the worker suspect at once: no new work goes to it, and
        # the reaper takes it offline if it does not come back within the grace period.
        core.hub.close_stream(wid, session)


@router.post("/heartbeat", response_model=HeartbeatResponse)
async def heartbeat(request: Request, worker: Worker, body: HeartbeatRequest) -> HeartbeatResponse:
    core = request.app.state.core
    answer = await fleet.heartbeat(core, worker, body)
    core.telemetry.heartbeats.inc()
    return answer


@router.post(
    "/job/{job_id}/status",
    response_model=ReportAck,
    responses={409: {"description": "stale attempt: stop that process"}},
)
async def status(request: Request, worker: Worker, job_id: str, body: AttemptReport) -> ReportAck:
    state = await jobs.report(request.app.state.core, worker, job_id, body)
    return ReportAck(job_id=job_id, state=state)


@router.post("/reports", response_model=ReportBatchAck)
async def reports(request: Request, worker: Worker, body: ReportBatch) -> ReportBatchAck:
    """Several attempts' reports at once (what a busy worker has to say since its last
    call), each taken or refused as its own ``/job/{id}/status`` would be."""
    return ReportBatchAck(results=await jobs.report_many(request.app.state.core, worker,
                                                         body.reports))  # fmt: skip


@router.post("/job/{job_id}/logs", status_code=204, responses={409: {"description": "stale"}})
async def logs(request: Request, worker: Worker, job_id: str, body: LogBatch) -> Response:
    await jobs.append_logs(request.app.state.core, worker, job_id, body)
    return Response(status_code=204)


@router.post("/pause", response_model=WorkerPause)
async def pause(request: Request, worker: Worker, body: WorkerPause) -> WorkerPause:
    """The worker stops (or lets again) new work come to it; what it runs goes on."""
    return await fleet.pause_self(request.app.state.core, worker, body.paused)


@router.post("/disconnect", status_code=204)
async def disconnect(request: Request, worker: Worker) -> Response:
    await fleet.disconnect(request.app.state.core, worker)
    return Response(status_code=204)
