"""Jobs: submit, list, get, cancel, logs (follow with SSE), result."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.sse import EventSourceResponse, format_sse_event

from corral.model import TERMINAL_JOB_STATES, InvalidInput
from corral.protocol import (
    BatchResult,
    BatchSubmit,
    EventList,
    JobList,
    JobMetrics,
    JobSubmit,
    JobView,
    JobWhy,
    WaitMany,
    WaitResult,
)
from corral.server import batch, history, jobs
from corral.server.auth import Identity, JobsRead, JobsSubmit
from corral.server.hub import wait

queue = APIRouter(prefix="/api/queue", tags=["jobs"])
router = APIRouter(prefix="/api/jobs", tags=["jobs"])


_REPLAY: dict[int | str, dict[str, Any]] = {
    200: {"description": "replay of an Idempotency-Key", "model": JobView}
}


@queue.post("/submit", response_model=JobView, status_code=201, responses=_REPLAY)
async def submit(
    request: Request,
    response: Response,
    who: JobsSubmit,
    body: JobSubmit,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobView:
    job, created = await jobs.submit(request.app.state.core, who, body, idempotency_key)
    if not created:
        response.status_code = 200
    return job


@queue.post(
    "/submit-batch",
    response_model=BatchResult,
    status_code=201,
    description="Up to 1,000 jobs in one transaction: all are queued or none. An item's "
    "idempotency_key works as the Idempotency-Key header of a single submit.",
)
async def submit_batch(request: Request, who: JobsSubmit, body: BatchSubmit) -> BatchResult:
    return await batch.submit_many(request.app.state.core, who, body.jobs)


@router.post(
    "/wait",
    response_model=WaitResult,
    description="Long poll: answers once at least one of ids has ended (with all that have), "
    "or after timeout_s with none.",
)
async def wait_jobs(request: Request, who: JobsRead, body: WaitMany) -> WaitResult:
    core = request.app.state.core
    core.follows.take(who.key_id)
    try:
        return await batch.wait_many(core, who.tenant_id, body.ids, body.timeout_s)
    finally:
        core.follows.give(who.key_id)


@router.get("", response_model=JobList)
async def list_jobs(
    request: Request,
    who: JobsRead,
    state: Annotated[list[str], Query(description="filter; repeat for several")] = [],  # noqa: B006
    worker_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
    final_metrics: Annotated[
        bool, Query(description="each job with its metrics' last values")
    ] = False,
    name: Annotated[str | None, Query(max_length=200, description="a part of its name")] = None,
    label: Annotated[
        list[str],
        Query(max_length=16, description="key=value its worker labels ask for; repeat"),
    ] = [],  # noqa: B006
) -> JobList:
    return await jobs.page(request.app.state.core, who.tenant_id, states=state,
                           worker_id=worker_id, limit=limit, cursor=cursor,
                           final_metrics=final_metrics, name=name,
                           labels=jobs.label_filter(label))  # fmt: skip


@router.post("/{job_id}/retry", response_model=JobView, status_code=201)
async def retry_job(request: Request, who: JobsSubmit, job_id: str) -> JobView:
    """A new job with the ended job's request (a gang's: the whole gang); its history says
    which job it retries."""
    return await jobs.retry(request.app.state.core, who, job_id)


@router.get("/{job_id}", response_model=JobView)
async def get_job(request: Request, who: JobsRead, job_id: str) -> JobView:
    return await jobs.get(request.app.state.core, who.tenant_id, job_id, attempts=True)


@router.get("/{job_id}/metrics", response_model=JobMetrics)
async def job_metrics(
    request: Request,
    who: JobsRead,
    job_id: str,
    name: Annotated[list[str], Query(max_length=100, description="only these; repeat")] = [],  # noqa: B006
    cursor: Annotated[str | None, Query(max_length=20)] = None,
) -> JobMetrics:
    """What its code reported (corral.sdk.report), as a series per metric, each point with
    its step and attempt; up to 10,000 points a page (``next_cursor`` for more)."""
    return await jobs.job_metrics(request.app.state.core, who.tenant_id, job_id, names=name,
                                  cursor=cursor)  # fmt: skip


@router.get("/{job_id}/why", response_model=JobWhy)
async def why_pending(request: Request, who: JobsRead, job_id: str) -> JobWhy:
    """Why a queued job is not running: what each worker of the tenant lacks or is doing."""
    return await jobs.why(request.app.state.core, who.tenant_id, job_id)


@router.post("/{job_id}/cancel", response_model=JobView)
async def cancel_job(request: Request, who: JobsSubmit, job_id: str) -> JobView:
    return await jobs.cancel(request.app.state.core, who, job_id)


@router.get("/{job_id}/result")
async def job_result(request: Request, who: JobsRead, job_id: str) -> dict[str, Any]:
    job = await jobs.get(request.app.state.core, who.tenant_id, job_id)
    return {"job_id": job.id, "state": job.state, "result": job.result,
            "exit_code": job.exit_code, "error": job.error}  # fmt: skip


@router.get(
    "/{job_id}/logs",
    responses={200: {"content": {"text/plain": {}, "text/event-stream": {}}}},
    description="The job's output. With follow=true: SSE events `log` (resume with Last-Event-ID) "
    '(`{"attempt", "data"}`) until an `end` event (`{"state"}`) once the job has finished. '
    "A gang's (its id is rank 0's): every member's output interleaved as it came, each line "
    "after `[rank N] `; `rank=N`: that member's alone (follow: rank 0's unless told).",
)
async def job_logs(
    request: Request,
    who: JobsRead,
    job_id: str,
    follow: bool = False,
    rank: Annotated[int | None, Query(ge=0, le=63)] = None,
    last_event_id: Annotated[int, Header(alias="Last-Event-ID", ge=0, lt=2**63)] = 0,
) -> Response:
    core = request.app.state.core
    job = await jobs.get(core, who.tenant_id, job_id, attempts=True)  # 404 before the body
    members = job.members if job.gang_id == job.id else None
    if members is not None and rank is not None:
        if rank >= len(members):
            raise InvalidInput(f"rank: the gang has {len(members)} members", field="rank")
        job_id, members = members[rank], None
    if not follow and members is not None:
        return StreamingResponse(_gang_text(core, who.tenant_id, members), media_type="text/plain")
    if not follow:
        # Streamed a page at a time: a long log never sits whole in the coordinator's memory.
        return StreamingResponse(_text(core, who.tenant_id, job_id), media_type="text/plain")
    return follow_logs(core, who, job_id, last_event_id)


def follow_logs(core: Any, who: Identity, job_id: str, after: int) -> EventSourceResponse:
    """The job's output from ``after`` on, as SSE, holding one of the key's follow places
    while it streams (the API's ``follow=true``, the dashboard's log pane)."""
    core.follows.take(who.key_id)
    return EventSourceResponse(core.follows.held(who.key_id, _follow(core, who.tenant_id,
                                                                     job_id, after)))  # fmt: skip


def _cut_before(page: jobs.LogPage, after: int, chunk_id: int) -> bool:
    """Was output cut between chunk ``after`` and chunk ``chunk_id``?"""
    return (
        bool(page.cut_bytes) and page.cut_after is not None and after <= page.cut_after < chunk_id
    )


async def _text(core: Any, tenant_id: str, job_id: str) -> AsyncIterator[str]:
    after, last_attempt = 0, None
    cap = core.settings.job_log_max_bytes
    while True:
        page = await jobs.logs_after(core, tenant_id, job_id, after)
        if not page.chunks:
            return
        for c in page.chunks:
            if _cut_before(page, after, c["id"]):
                yield page.cut_marker(cap)
            if last_attempt is not None and c["attempt"] != last_attempt:
                yield f"\n--- attempt {c['attempt']} ---\n"
            last_attempt = c["attempt"]
            after = c["id"]
            yield c["data"]


async def _gang_text(core: Any, tenant_id: str, members: list[str]) -> AsyncIterator[str]:
    """The members' output merged in the order it reached the coordinator (chunk ids
    grow across jobs), each line after its rank, a page a member at a time."""
    after = dict.fromkeys(range(len(members)), 0)
    pending: dict[int, list[Any]] = {r: [] for r in after}
    done: set[int] = set()
    fresh_line = dict.fromkeys(after, True)
    while True:
        for r in after:
            if not pending[r] and r not in done:
                page = await jobs.logs_after(core, tenant_id, members[r], after[r])
                pending[r] = list(page.chunks)
                if not page.chunks:
                    done.add(r)
        ready = [r for r in after if pending[r]]
        if not ready:
            return
        r = min(ready, key=lambda k: pending[k][0]["id"])
        chunk = pending[r].pop(0)
        after[r] = chunk["id"]
        out = []
        for line in chunk["data"].splitlines(keepends=True):
            out.append(f"[rank {r}] {line}" if fresh_line[r] else line)
            fresh_line[r] = line.endswith("\n")
        yield "".join(out)


async def _follow(core: Any, tenant_id: str, job_id: str, after: int) -> AsyncIterator[bytes]:
    """From ``after`` (a reconnect's Last-Event-ID) on, exactly once."""
    cap = core.settings.job_log_max_bytes
    while True:
        signal = core.hub.jobs.watch(job_id)
        page = await jobs.logs_after(core, tenant_id, job_id, after)
        for c in page.chunks:
            if _cut_before(page, after, c["id"]):
                cut = json.dumps({"attempt": c["attempt"], "data": page.cut_marker(cap)})
                yield format_sse_event(data_str=cut, event="log")
            after = c["id"]
            data = json.dumps({"attempt": c["attempt"], "data": c["data"]})
            yield format_sse_event(data_str=data, event="log", id=str(c["id"]))
        if not page.chunks:
            if page.state in TERMINAL_JOB_STATES:
                end = json.dumps({"state": page.state})
                yield format_sse_event(data_str=end, event="end")
                return
            await wait(signal, 15.0)
            yield b": ping\n\n"


@router.get(
    "/{job_id}/events",
    response_model=EventList,
    responses={200: {"content": {"application/json": {}, "text/event-stream": {}}}},
    description="The job's history, oldest first: submitted, assigned, running, lost and why, "
    "requeued, cancelled by whom, succeeded or failed. With follow=true: SSE events `history` "
    '(an EventView; resume with Last-Event-ID) until an `end` event (`{"state"}`) once the '
    "job has ended.",
)
async def job_events(
    request: Request,
    who: JobsRead,
    job_id: str,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    follow: bool = False,
    last_event_id: Annotated[int, Header(alias="Last-Event-ID", ge=0, lt=2**63)] = 0,
) -> Any:
    core = request.app.state.core
    page = await history.of_job(core, who.tenant_id, job_id, cursor=cursor, limit=limit)
    if not follow:
        return page
    core.follows.take(who.key_id)
    return EventSourceResponse(
        core.follows.held(who.key_id, _follow_events(core, who.tenant_id, job_id, last_event_id))
    )


async def _follow_events(
    core: Any, tenant_id: str, job_id: str, after: int
) -> AsyncIterator[bytes]:
    """From ``after`` on, each entry once, then ``end`` when the job has ended."""
    while True:
        signal = core.hub.jobs.watch(job_id)
        events, state = await history.job_after(core, tenant_id, job_id, after)
        for e in events:
            after = e.id
            yield format_sse_event(data_str=e.model_dump_json(), event="history", id=str(e.id))
        if not events:
            if state is None or state in TERMINAL_JOB_STATES:
                end = json.dumps({"state": state})
                yield format_sse_event(data_str=end, event="end")
                return
            await wait(signal, 15.0)
            yield b": ping\n\n"
