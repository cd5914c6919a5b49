"""The dashboard's login and job pages. Each page calls the same services the API's routes
call, with the viewer's identity, so it shows and does exactly what the viewer's key may
through the API, in its tenant only."""

from __future__ import annotations

import shlex
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse

from corral.model import (
    ACTIVE_JOB_STATES,
    TERMINAL_JOB_STATES,
    InvalidInput,
    JobState,
    Permission,
    Unauthenticated,
)
from corral.protocol import JobSubmit
from corral.server import artifacts, history, jobs
from corral.server.api.artifacts import download_response
from corral.server.api.jobs import follow_logs
from corral.server.dashboard.render import HEADERS, HtmlRoute, back, page
from corral.server.dashboard.session import COOKIE, Looking, form_of, login, same_origin

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=HtmlRoute)
PAGE = 50  # rows a table shows at once: a fleet of thousands is paged, never listed whole
_STATES = [s.value for s in JobState]


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/ui/jobs") -> Response:
    return page(request, "login.html", None, next=_local(next))


@router.post("/login", response_class=HTMLResponse)
async def login_form(
    request: Request,
    key: Annotated[str, Form(max_length=4096)],
    next: Annotated[str, Form(max_length=2000)] = "/ui/jobs",
) -> Response:
    same_origin(request)
    try:
        session, seconds = await login(request, key.strip())
    except Unauthenticated as exc:
        return page(request, "login.html", None, 401, next=_local(next), error=exc.detail)
    resp = back(_local(next))
    resp.set_cookie(COOKIE, session, max_age=seconds, httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", path="/")  # fmt: skip
    return resp


@router.post("/logout")
async def logout(request: Request, v: Looking) -> Response:
    await form_of(request, v)
    resp = back("/ui/login")
    resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return resp


def _local(target: str) -> str:
    """Only a path of the dashboard is a place to go after logging in (no open redirect)."""
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/jobs"


# ---- jobs ---------------------------------------------------------------------------------


def _filters(state: str, name: str, label: str) -> dict[str, Any]:
    if state and state not in _STATES:
        raise InvalidInput(f"unknown state {state!r}", field="state")
    labels = jobs.label_filter([p.strip() for p in label.split(",") if p.strip()])
    return {"states": [state] if state else [], "name": name or None, "labels": labels}


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    v: Looking,
    state: Annotated[str, Query(max_length=20)] = "",
    name: Annotated[str, Query(max_length=200)] = "",
    label: Annotated[str, Query(max_length=1000)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    hx_request: Annotated[str | None, Header()] = None,
) -> Response:
    core = request.app.state.core
    listed = await jobs.page(core, v.who.tenant_id, worker_id=None, limit=PAGE, cursor=cursor,
                             **_filters(state, name, label))  # fmt: skip
    query = {"state": state, "name": name, "label": label}
    more = urlencode({**query, "cursor": listed.next_cursor}) if listed.next_cursor else None
    context: dict[str, Any] = {
        "jobs": listed.jobs, "query": query, "rows_url": "/ui/jobs?" + urlencode(query),
        "more": more, "paged": cursor is not None, "states": _STATES,
        "active": ACTIVE_JOB_STATES, "ended": TERMINAL_JOB_STATES,
    }  # fmt: skip
    if hx_request:
        return page(request, "_jobs.html", v, **context)
    return page(request, "jobs.html", v, **context)


@router.post("/jobs")
async def submit_form(request: Request, v: Looking) -> Response:
    form = await form_of(request, v)
    v.need(Permission.JOBS_SUBMIT)

    def text(k: str) -> str:
        return str(form.get(k) or "").strip()

    try:
        command = shlex.split(text("command"))
    except ValueError as exc:
        raise InvalidInput(f"command: {exc}", field="command") from None
    if not command:
        raise InvalidInput("command: say what to run", field="command")
    labels = jobs.label_filter([p.strip() for p in text("labels").split(",") if p.strip()])
    try:
        body = JobSubmit.model_validate({
            "name": text("name") or None, "command": command, "worker_labels": labels,
            "gpus": int(text("gpus") or 0), "max_retries": int(text("retries") or 3),
            "timeout_s": float(text("timeout")) if text("timeout") else None,
        })  # fmt: skip
    except ValueError as exc:  # pydantic's ValidationError is one
        raise InvalidInput(f"the job is not valid: {_first(exc)}", field="job") from None
    job, _ = await jobs.submit(request.app.state.core, v.who, body, None)
    return back(f"/ui/jobs/{job.id}")


def _first(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        return f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
    return str(exc)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, v: Looking, job_id: str) -> Response:
    core, tenant = request.app.state.core, v.who.tenant_id
    job = await jobs.get(core, tenant, job_id, attempts=True)
    why = await jobs.why(core, tenant, job_id) if job.state is JobState.QUEUED else None
    events = await history.of_job(core, tenant, job_id, cursor=None, limit=200)
    stored = await artifacts.job_artifacts(core, v.who, job_id)
    return page(request, "job.html", v, job=job, why=why, events=events.events,
                more_events=events.next_cursor is not None, artifacts=stored.artifacts,
                active=job.state not in TERMINAL_JOB_STATES,
                ended=TERMINAL_JOB_STATES)  # fmt: skip


@router.get("/jobs/{job_id}/history", response_class=HTMLResponse)
async def job_history(request: Request, v: Looking, job_id: str) -> Response:
    core, tenant = request.app.state.core, v.who.tenant_id
    job = await jobs.get(core, tenant, job_id, attempts=True)
    events = await history.of_job(core, tenant, job_id, cursor=None, limit=200)
    return page(request, "_history.html", v, job=job, events=events.events,
                more_events=events.next_cursor is not None,
                active=job.state not in TERMINAL_JOB_STATES)  # fmt: skip


@router.get("/jobs/{job_id}/metrics.json")
async def job_metrics(request: Request, v: Looking, job_id: str) -> Response:
    """What the charts draw: each series' points, and whether more may come."""
    core, tenant = request.app.state.core, v.who.tenant_id
    job = await jobs.get(core, tenant, job_id)
    got = await jobs.job_metrics(core, tenant, job_id, names=[], cursor=None)
    series = [{"name": s.name, "steps": [p.step for p in s.points],
               "values": [p.value for p in s.points]} for s in got.series]  # fmt: skip
    return JSONResponse({"state": job.state, "live": job.state not in TERMINAL_JOB_STATES,
                         "series": series}, headers=HEADERS)  # fmt: skip


@router.get("/jobs/{job_id}/logs")
async def job_logs(
    request: Request,
    v: Looking,
    job_id: str,
    last_event_id: Annotated[int, Header(alias="Last-Event-ID", ge=0, lt=2**63)] = 0,
) -> Response:
    """The job's output as it comes (SSE), for the page's log pane."""
    core = request.app.state.core
    await jobs.get(core, v.who.tenant_id, job_id)  # 404 before the stream
    return follow_logs(core, v.who, job_id, last_event_id)


@router.get("/jobs/{job_id}/artifacts/{artifact_id}")
async def job_artifact(request: Request, v: Looking, job_id: str, artifact_id: int) -> Response:
    if not 1 <= artifact_id < 2**31:
        raise InvalidInput("artifact_id is out of range", field="artifact_id")
    d = await artifacts.download(request.app.state.core, v.who, job_id, artifact_id)
    assert d.artifact is not None
    return download_response(d, d.artifact.name)


@router.post("/jobs/{job_id}/cancel")
async def cancel_form(request: Request, v: Looking, job_id: str) -> Response:
    await form_of(request, v)
    v.need(Permission.JOBS_SUBMIT)
    await jobs.cancel(request.app.state.core, v.who, job_id)
    return back(f"/ui/jobs/{job_id}")


@router.post("/jobs/{job_id}/retry")
async def retry_form(request: Request, v: Looking, job_id: str) -> Response:
    await form_of(request, v)
    v.need(Permission.JOBS_SUBMIT)
    job = await jobs.retry(request.app.state.core, v.who, job_id)
    return back(f"/ui/jobs/{job.id}")
