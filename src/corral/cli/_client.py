"""The CLI's client: typed calls on the coordinator's HTTP API over the one Transport.

Errors come back as ``Failure`` with an exit code, so a command never shows a traceback
for something the user or the network did.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

import httpx
import stamina
from httpx_sse import EventSource

from corral.cli._exit import ExitCode, Failure
from corral.protocol import (
    JobList,
    JobSubmit,
    JobView,
    WorkerCreate,
    WorkerCreated,
    WorkerList,
    WorkerView,
)
from corral.protocol.transport import ApiError, Transport, Unreachable

DEFAULT_URL = "http://127.0.0.1:8001"
T = TypeVar("T")


class Client:
    """One coordinator (or a comma-separated list for fail-over), one API key."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, **kw: Any) -> None:
        # The CLI says in one line what failed; stamina's per-retry warnings would bury that
        # line. Set here, not at import, so a worker started by `corral worker` keeps them.
        stamina.instrumentation.set_on_retry_hooks([])
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # A person is waiting: give up after ~15 s rather than the worker's patient minute.
        kw.setdefault("attempts", 4)
        kw.setdefault("retry_timeout_s", 15.0)
        self.url = url
        self.transport = Transport(check_urls(url), headers=headers, **kw)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.transport.aclose()

    # ---- jobs -------------------------------------------------------------

    async def submit(self, spec: JobSubmit, *, idempotency_key: str | None = None) -> JobView:
        # The key makes the POST safe to retry: a replay returns the job already queued.
        key = idempotency_key or uuid.uuid4().hex
        body = await self.transport.json(
            "POST",
            "/api/queue/submit",
            json=spec.model_dump(mode="json", exclude_unset=True),
            headers={"Idempotency-Key": key},
            idempotent=True,
        )
        return JobView.model_validate(body)

    async def jobs(
        self, *, state: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> JobList:
        params = {k: v for k, v in {"state": state, "limit": limit, "cursor": cursor}.items() if v}
        return JobList.model_validate(await self.transport.json("GET", "/api/jobs", params=params))

    async def job(self, job_id: str) -> JobView:
        return JobView.model_validate(await self.transport.json("GET", f"/api/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> JobView:
        body = await self.transport.json("POST", f"/api/jobs/{job_id}/cancel", idempotent=True)
        return JobView.model_validate(body)

    async def logs(self, job_id: str) -> str:
        resp = await self.transport.request("GET", f"/api/jobs/{job_id}/logs")
        return resp.text

    async def result(self, job_id: str) -> dict[str, Any]:
        return await self.transport.json("GET", f"/api/jobs/{job_id}/result")

    async def follow(
        self, job_id: str, after: int = 0
    ) -> AsyncIterator[tuple[str, dict[str, Any], int]]:
        """SSE events of a job's output after event id ``after``:
        ``("log", {attempt, data}, id)`` … ``("end", {state}, 0)``."""
        async with self.transport.stream(
            "GET",
            f"/api/jobs/{job_id}/logs",
            params={"follow": "true"},
            headers={"Accept": "text/event-stream", "Last-Event-ID": str(after)},
            # No read timeout: a quiet job may print nothing for minutes.
            timeout=httpx.Timeout(10.0, read=None),
        ) as resp:
            async for sse in EventSource(resp).aiter_sse():
                try:
                    data = json.loads(sse.data) if sse.data else {}
                except ValueError:
                    data = {"data": sse.data}
                yield sse.event, data, int(sse.id) if sse.id and sse.id.isdigit() else 0

    # ---- workers (admin) --------------------------------------------------

    async def workers(self) -> WorkerList:
        return WorkerList.model_validate(await self.transport.json("GET", "/api/admin/workers"))

    async def create_worker(self, spec: WorkerCreate) -> WorkerCreated:
        body = await self.transport.json(
            "POST", "/api/admin/workers", json=spec.model_dump(mode="json")
        )
        return WorkerCreated.model_validate(body)

    async def drain_worker(self, worker_id: str) -> Any:
        return await self.transport.json(
            "POST", f"/api/admin/workers/{worker_id}/drain", idempotent=True
        )

    async def delete_worker(self, worker_id: str) -> None:
        await self.transport.request("DELETE", f"/api/admin/workers/{worker_id}")

    async def rotate_token(self, worker_id: str) -> WorkerCreated:
        body = await self.transport.json("POST", f"/api/admin/workers/{worker_id}/token")
        return WorkerCreated.model_validate(body)

    async def find_worker(self, ref: str) -> WorkerView:
        """A worker by id or by name, so people can type the name they gave it."""
        listing = (await self.workers()).workers
        for match in (
            [w for w in listing if w.id == ref],
            [w for w in listing if w.name == ref],
        ):
            if len(match) == 1:
                return match[0]
            if len(match) > 1:
                raise Failure(f"several workers are named {ref!r}; use its id")
        raise Failure(f"no worker {ref!r} (see 'corral workers ls')")

    async def healthy(self) -> bool:
        try:
            await self.transport.request("GET", "/healthz")
        except (ApiError, Unreachable):
            return False
        return True


def check_urls(url: str) -> list[str]:
    """The coordinator URLs in ``url`` (comma-separated); a Failure (exit 2) for one that
    is not an http(s) URL with a host, rather than a traceback from deep in httpx."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise Failure("no coordinator URL given (set --url or CORRAL_URL)")
    for u in urls:
        try:
            parsed = httpx.URL(u)
            problem = None
            if parsed.scheme not in ("http", "https"):
                problem = "it is not an http:// or https:// URL"
            elif not parsed.host:
                problem = "it names no host"
            elif parsed.port is not None and not 0 < parsed.port < 65536:
                problem = f"port {parsed.port} is out of range"
        except httpx.InvalidURL as exc:
            problem = str(exc)
        if problem:
            raise Failure(f"bad coordinator URL {u!r} (--url or CORRAL_URL): {problem}")
    return urls


def explain(exc: ApiError | Unreachable, url: str) -> Failure:
    """One line for the terminal, and the exit code the README promises."""
    if isinstance(exc, Unreachable):
        return Failure(
            f"cannot reach the coordinator at {url} (is it running? set --url or CORRAL_URL)",
            ExitCode.UNREACHABLE,
        )
    fields = "; ".join(
        f"{e.get('field')}: {e.get('message')}"
        for e in exc.body.get("errors") or []
        if isinstance(e, dict)
    )
    detail = exc.detail or exc.code
    if fields and fields not in detail:
        detail = f"{detail} ({fields})"
    if exc.status == 401:
        detail += " (set --api-key or CORRAL_API_KEY)"
    if exc.status >= 500:
        return Failure(f"coordinator error {exc.status}: {detail}", ExitCode.SERVER_ERROR)
    return Failure(f"{detail} [{exc.code}]", ExitCode.USAGE)


def run(url: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; turn API and network errors into a ``Failure``."""
    try:
        return asyncio.run(_guard(coro, url))
    except KeyboardInterrupt:
        raise Failure("interrupted", ExitCode.INTERRUPTED) from None


async def _guard(coro: Coroutine[Any, Any, T], url: str) -> T:
    try:
        return await coro
    except (ApiError, Unreachable) as exc:
        raise explain(exc, url) from exc
    except httpx.InvalidURL as exc:  # a path or query httpx refuses: still one line
        raise Failure(f"bad URL: {exc}") from None
