"""The worker's side of the protocol, over the one Transport: typed calls and the SSE stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog
from httpx_sse import EventSource
from pydantic import BaseModel, TypeAdapter, ValidationError

from corral.protocol import (
    WORKER_TOKEN_HEADER,
    ArtifactView,
    AttemptReport,
    Event,
    HeartbeatRequest,
    HeartbeatResponse,
    JobAssign,
    JobCancel,
    LogBatch,
    RegisterRequest,
    RegisterResponse,
    ReportAck,
    ReportBatch,
    ReportBatchAck,
    ReportOutcome,
    WorkerDrain,
    WorkerPause,
    WorkerReport,
    blobs,
)
from corral.protocol.transport import Transport

__all__ = ["BadAnswer", "StreamEvent", "TokenRefused", "WorkerClient", "parse_event"]

log = structlog.get_logger("corral.worker.client")

M = TypeVar("M", bound=BaseModel)
_EVENTS: TypeAdapter[JobAssign | JobCancel | WorkerDrain] = TypeAdapter(Event)
_EVENT_MODELS: dict[str, type[BaseModel]] = {
    "job.assign": JobAssign,
    "job.cancel": JobCancel,
    "worker.drain": WorkerDrain,
}


class TokenRefused(Exception):
    """The coordinator refused the worker token (401/403): wrong, or rotated."""


class BadAnswer(Exception):
    """The coordinator answered 2xx with a body this worker cannot read."""


@dataclass(frozen=True)
class StreamEvent:
    id: str | None
    event: JobAssign | JobCancel | WorkerDrain


class WorkerClient:
    def __init__(self, transport: Transport, *, stream_idle_timeout_s: float = 15.0) -> None:
        self.transport = transport
        # The coordinator pings every 5 s; silence three times that long means the stream
        # is dead even if the socket looks open (a NAT dropped it, a proxy hung, the
        # coordinator froze), and the worker moves to the next coordinator.
        self.stream_idle_timeout_s = stream_idle_timeout_s

    @classmethod
    def for_token(
        cls, urls: str, token: str, *, timeout_s: float = 10.0, retry_timeout_s: float = 60.0,
        ca_file: Path | None = None, verify: bool = True,
    ) -> WorkerClient:  # fmt: skip
        transport = Transport(
            urls,
            headers={WORKER_TOKEN_HEADER: token},
            timeout_s=timeout_s,
            retry_timeout_s=retry_timeout_s,
            ca_file=ca_file,
            verify=verify,
        )
        return cls(transport)

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def register(self, req: RegisterRequest) -> RegisterResponse:
        data = await self.transport.json(
            "POST", "/api/workers/register", json=req.model_dump(mode="json"), idempotent=True
        )
        return _parse(RegisterResponse, data)

    async def heartbeat(self, req: HeartbeatRequest) -> HeartbeatResponse:
        # Not retried: the next beat is only an interval away and says the same, but newer.
        data = await self.transport.json(
            "POST", "/api/workers/heartbeat", json=req.model_dump(mode="json"), idempotent=False
        )
        return _parse(HeartbeatResponse, data)

    async def report(self, job_id: str, report: AttemptReport) -> ReportAck:
        # The coordinator acks the same final report again, so a retry is safe.
        data = await self.transport.json(
            "POST",
            f"/api/workers/job/{quote(job_id, safe='')}/status",
            json=report.model_dump(mode="json"),
            idempotent=True,
        )
        return _parse(ReportAck, data)

    async def reports(self, reports: list[WorkerReport]) -> list[ReportOutcome]:
        """Several reports in one call; one outcome each, in their order. Safe to retry as
        ``report`` is."""
        data = await self.transport.json(
            "POST",
            "/api/workers/reports",
            json=ReportBatch(reports=reports).model_dump(mode="json"),
            idempotent=True,
        )
        ack = _parse(ReportBatchAck, data)
        if len(ack.results) != len(reports):
            raise BadAnswer(f"{len(ack.results)} outcomes for {len(reports)} reports")
        return ack.results

    async def send_logs(self, job_id: str, batch: LogBatch) -> None:
        await self.transport.request(
            "POST",
            f"/api/workers/job/{quote(job_id, safe='')}/logs",
            json=batch.model_dump(mode="json"),
            idempotent=True,
        )

    async def fetch_workdir(self, job_id: str, attempt: int, digest: str, dest: Path) -> None:
        """The job's packed working directory into ``dest``, checked against ``digest``."""
        path = f"/api/workers/job/{quote(job_id, safe='')}/workdir"
        await blobs.download(self.transport, path, dest, expect=digest,
                             params={"attempt": attempt})  # fmt: skip

    async def fetch_checkpoint(self, job_id: str, attempt: int, dest: Path) -> ArtifactView | None:
        """The job's newest checkpoint into ``dest`` (a tar), or None when it has none."""
        path = f"/api/workers/job/{quote(job_id, safe='')}/checkpoint"
        headers = await blobs.download(self.transport, path, dest, params={"attempt": attempt})
        if headers is None:
            return None
        try:
            return ArtifactView.model_validate_json(headers.get("X-Corral-Artifact", ""))
        except ValidationError as exc:
            raise BadAnswer(f"unreadable checkpoint record: {exc}") from exc

    async def put_checkpoint(
        self, job_id: str, attempt: int, archive: Path, *, digest: str, step: int, name: str
    ) -> ArtifactView:
        path = f"/api/workers/job/{quote(job_id, safe='')}/checkpoints/{digest}"
        params = {"attempt": attempt, "step": step, "name": name}
        data = await blobs.upload(self.transport, "PUT", path, archive, params=params)
        return _parse(ArtifactView, data)

    async def put_output(
        self, job_id: str, attempt: int, file: Path, *, digest: str, name: str
    ) -> ArtifactView:
        path = f"/api/workers/job/{quote(job_id, safe='')}/outputs/{digest}"
        params = {"attempt": attempt, "name": name}
        data = await blobs.upload(self.transport, "PUT", path, file, params=params)
        return _parse(ArtifactView, data)

    async def pause(self, paused: bool) -> WorkerPause:
        """No new work for this worker (``paused=False``: again); what it runs goes on. The
        same request twice says the same, so a retry is safe."""
        data = await self.transport.json(
            "POST", "/api/workers/pause", json=WorkerPause(paused=paused).model_dump(mode="json"),
            idempotent=True,
        )  # fmt: skip
        return _parse(WorkerPause, data)

    async def disconnect(self) -> None:
        await self.transport.request("POST", "/api/workers/disconnect", idempotent=False)

    @asynccontextmanager
    async def events(self, last_event_id: str | None) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        """Open ``/api/workers/stream``; yields its events, resuming after ``last_event_id``.

        Raises the CorralError the coordinator answered (Unauthenticated: the token is
        refused) or Unreachable on open; a stream that breaks later raises
        httpx.TransportError or SSEError from the iteration.
        """
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        timeout = httpx.Timeout(10.0, read=self.stream_idle_timeout_s)
        async with self.transport.stream(
            "GET", "/api/workers/stream", headers=headers, timeout=timeout
        ) as response:
            yield _iter_events(EventSource(response))


async def _iter_events(source: EventSource) -> AsyncIterator[StreamEvent]:
    async for sse in source.aiter_sse():
        event = parse_event(sse.event, sse.data)
        if event is not None:
            yield StreamEvent(sse.id or None, event)


def parse_event(name: str, data: str) -> JobAssign | JobCancel | WorkerDrain | None:
    """The event in one SSE message, or None (logged) for one this worker does not know."""
    if name == "message" and not data:
        # A keep-alive comment: httpx-sse dispatches it as an empty message once an event
        # id has been seen (the id outlives the event, as the SSE spec says).
        return None
    try:
        raw = _loads(data)
    except ValueError as exc:
        log.error("stream.bad_event", sse_event=name, error=str(exc))
        return None
    kind = raw.get("type") or name
    model = _EVENT_MODELS.get(kind)
    if model is None:
        log.warning("stream.unknown_event", sse_event=name, type=kind)
        return None
    raw["type"] = kind
    try:
        return _EVENTS.validate_python(_known_fields(model, raw))
    except ValidationError as exc:
        log.error("stream.bad_event", sse_event=name, error=str(exc))
        return None


def _loads(data: str) -> dict[str, Any]:
    value = json.loads(data or "{}")
    if not isinstance(value, dict):
        raise ValueError("event data is not a JSON object")
    return value


def _known_fields(model: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    # The wire models refuse unknown fields (a typo in a request is a 422). An answer from a
    # newer coordinator may carry fields this worker does not know yet: ignore them.
    return {k: v for k, v in data.items() if k in model.model_fields}


def _parse(model: type[M], data: Any) -> M:
    if not isinstance(data, Mapping):
        raise BadAnswer(f"expected a JSON object for {model.__name__}, got {type(data).__name__}")
    try:
        return model.model_validate(_known_fields(model, data))
    except ValidationError as exc:
        raise BadAnswer(f"unreadable {model.__name__}: {exc}") from exc
