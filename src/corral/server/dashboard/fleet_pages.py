"""The dashboard's fleet and audit pages: the tenant's workers a page at a time, with what an
admin does to them (create, drain, pause, resume, rotate a token, remove), and the audit
log. The same services as ``/api/admin/workers`` and ``/api/admin/audit``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import HTMLResponse

from corral.model import InvalidInput, Permission, WorkerType
from corral.protocol import WorkerCreate
from corral.server import audit, fleet, jobs
from corral.server.dashboard.pages import PAGE
from corral.server.dashboard.render import HtmlRoute, back, page
from corral.server.dashboard.session import Looking, form_of

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=HtmlRoute)


@router.get("/fleet", response_class=HTMLResponse)
async def fleet_page(
    request: Request,
    v: Looking,
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    hx_request: Annotated[str | None, Header()] = None,
) -> Response:
    v.need(Permission.WORKERS_ADMIN)
    core, tenant = request.app.state.core, v.who.tenant_id
    listed = await fleet.listing(core, tenant, limit=PAGE, offset=(page_no - 1) * PAGE)
    total = await fleet.count(core, tenant)
    context: dict[str, Any] = {"workers": listed.workers, "page_no": page_no, "total": total,
                               "pages": max((total + PAGE - 1) // PAGE, 1)}  # fmt: skip
    return page(request, "_fleet.html" if hx_request else "fleet.html", v, **context)


@router.post("/fleet", response_class=HTMLResponse)
async def create_form(request: Request, v: Looking) -> Response:
    """A new worker; its token is shown on the answer's page once, and never again."""
    form = await form_of(request, v)
    v.need(Permission.WORKERS_ADMIN)
    labels = jobs.label_filter(
        [p.strip() for p in str(form.get("labels") or "").split(",") if p.strip()]
    )
    kind = str(form.get("worker_type") or WorkerType.PERSISTENT.value)
    try:
        body = WorkerCreate.model_validate({"name": str(form.get("name") or "").strip(),
                                            "labels": labels, "worker_type": kind})  # fmt: skip
    except ValueError as exc:
        raise InvalidInput(f"the worker is not valid: {exc}", field="worker") from None
    made = await fleet.create(request.app.state.core, v.who, body)
    return page(request, "token.html", v, made=made, coordinator=str(request.base_url))


Action = Literal["drain", "pause", "resume", "rotate", "remove"]


@router.post("/workers/{worker_id}/{action}", response_class=HTMLResponse)
async def worker_action(request: Request, v: Looking, worker_id: str, action: Action) -> Response:
    await form_of(request, v)
    v.need(Permission.WORKERS_ADMIN)
    core = request.app.state.core
    if action == "drain":
        await fleet.drain(core, v.who, worker_id)
    elif action in ("pause", "resume"):
        await fleet.pause(core, v.who, worker_id, action == "pause")
    elif action == "rotate":
        made = await fleet.rotate(core, v.who, worker_id)
        return page(request, "token.html", v, made=made, coordinator=str(request.base_url),
                    rotated=True)  # fmt: skip
    else:
        await fleet.remove(core, v.who, worker_id)
    return back("/ui/fleet")


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    request: Request,
    v: Looking,
    action: Annotated[str, Query(max_length=100)] = "",
    actor: Annotated[str, Query(max_length=100)] = "",
    cursor: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """The tenant's audit log (every tenant's for an operator), oldest first, paged."""
    v.need(Permission.AUDIT_READ)
    scope = None if v.may(Permission.TENANTS_ADMIN) else v.who.tenant_id
    listed = await audit.listing(request.app.state.core, scope, since=None,
                                 actor=actor or None, action=action or None, cursor=cursor,
                                 limit=PAGE)  # fmt: skip
    return page(request, "audit.html", v, events=listed.events, next_cursor=listed.next_cursor,
                action=action, actor=actor)  # fmt: skip
