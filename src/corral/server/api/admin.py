"""Admin endpoints for the fleet (permission workers.admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from corral.protocol import (
    EventList,
    RegistrationIssued,
    WorkerCreate,
    WorkerCreated,
    WorkerList,
    WorkerView,
)
from corral.server import enrolment, fleet, history
from corral.server.auth import WorkersAdmin

router = APIRouter(prefix="/api/admin/workers", tags=["admin"])


@router.get("", response_model=WorkerList)
async def list_workers(request: Request, who: WorkersAdmin) -> WorkerList:
    return await fleet.listing(request.app.state.core, who.tenant_id)


@router.post("", response_model=WorkerCreated, status_code=201)
async def create_worker(request: Request, who: WorkersAdmin, body: WorkerCreate) -> WorkerCreated:
    return await fleet.create(request.app.state.core, who, body)


@router.post("/registrations", response_model=RegistrationIssued, status_code=201)
async def issue_registration(
    request: Request, who: WorkersAdmin, body: WorkerCreate
) -> RegistrationIssued:
    """A single-use registration token for the worker ``body`` describes: the worker trades
    it and a CSR for its own key for a certificate (``POST /api/workers/enrol``)."""
    return await enrolment.issue(request.app.state.core, who, body)


@router.delete("/{worker_id}", status_code=204, responses={409: {"description": "not offline"}})
async def delete_worker(request: Request, who: WorkersAdmin, worker_id: str) -> Response:
    await fleet.remove(request.app.state.core, who, worker_id)
    return Response(status_code=204)


@router.post("/{worker_id}/drain", response_model=WorkerView)
async def drain_worker(request: Request, who: WorkersAdmin, worker_id: str) -> WorkerView:
    return await fleet.drain(request.app.state.core, who, worker_id)


@router.post("/{worker_id}/pause", response_model=WorkerView)
async def pause_worker(request: Request, who: WorkersAdmin, worker_id: str) -> WorkerView:
    """No new work goes to it until it is resumed; what it runs goes on."""
    return await fleet.pause(request.app.state.core, who, worker_id, True)


@router.post("/{worker_id}/resume", response_model=WorkerView)
async def resume_worker(request: Request, who: WorkersAdmin, worker_id: str) -> WorkerView:
    return await fleet.pause(request.app.state.core, who, worker_id, False)


@router.post("/{worker_id}/token", response_model=WorkerCreated)
async def rotate_token(request: Request, who: WorkersAdmin, worker_id: str) -> WorkerCreated:
    return await fleet.rotate(request.app.state.core, who, worker_id)


@router.get("/{worker_id}", response_model=WorkerView)
async def get_worker(request: Request, who: WorkersAdmin, worker_id: str) -> WorkerView:
    return await fleet.get(request.app.state.core, who.tenant_id, worker_id)


@router.get("/{worker_id}/events", response_model=EventList)
async def worker_events(
    request: Request,
    who: WorkersAdmin,
    worker_id: str,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventList:
    """The worker's history: created, registered, connected, draining, offline and why,
    token rotated, removed. Oldest first."""
    return await history.of_worker(request.app.state.core, who.tenant_id, worker_id,
                                   cursor=cursor, limit=limit)  # fmt: skip
