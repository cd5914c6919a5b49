"""The asynchronous client: every call of the coordinator's API, typed both ways."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from httpx_sse import ServerSentEvent
from pydantic import BaseModel

from corral.client import _calls, _stream
from corral.client._accounts import AccountCalls
from corral.client._artifacts import ArtifactCalls
from corral.client._config import check_urls, from_env, tls_from_env
from corral.client._valid import by_ref
from corral.client._valid import valid as _valid
from corral.model import CorralError, InvalidInput, NotFound, WorkerType
from corral.protocol import (
    BatchJob,
    EventList,
    EventView,
    JobList,
    JobMetrics,
    JobSubmit,
    JobView,
    JobWhy,
    MetricPoint,
    RegistrationIssued,
    WorkerCreate,
    WorkerCreated,
    WorkerList,
    WorkerView,
)
from corral.protocol.transport import Transport

M = TypeVar("M", bound=BaseModel)

PAGE_SIZE = 500  # rows per request when iterating; the coordinator allows up to 1000

# Wire field -> the keyword of ``submit`` that sets it, so an InvalidInput names the keyword.
_SUBMIT_KEYWORD = {"worker_labels": "labels", "max_retries": "retries", "timeout_s": "timeout"}


class AsyncClient(AccountCalls, ArtifactCalls):
    """The coordinator's API for asyncio code. ``url`` may list several coordinators,
    comma-separated: they fail over in order. Without ``url`` or ``api_key`` it reads
    ``CORRAL_URL`` and ``CORRAL_API_KEY``; the URL defaults to ``http://127.0.0.1:8001``.
    ``token`` (or ``token_file``, or ``CORRAL_TOKEN`` / ``CORRAL_TOKEN_FILE``) is an API
    token (``POST /api/auth/token``), sent instead of the key. ``ca_file`` (or
    ``CORRAL_CA_FILE``) is the CA an https:// coordinator's certificate must come from (a
    coordinator's own, ``<data-dir>/pki/ca.pem``); ``verify=False`` (or
    ``CORRAL_SSL_NO_VERIFY``) checks nothing, for development only.

    ``timeout`` bounds each request (seconds). Idempotent calls are retried with backoff
    and jitter for up to ``attempts`` tries within ``retry_timeout`` seconds; a followed
    stream that drops is reopened until no coordinator has answered for ``retry_timeout``.
    Every failure is a ``CorralError``: ``Unreachable`` when no coordinator answered, else
    the class of the coordinator's answer (``NotFound``, ``InvalidInput``…).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        token: str | None = None,
        token_file: str | Path | None = None,
        ca_file: str | Path | None = None,
        verify: bool | None = None,
        timeout: float = 10.0,
        attempts: int = 5,
        retry_timeout: float = 60.0,
    ) -> None:
        url, api_key = from_env(url, api_key, token, token_file)
        ca_path, check = tls_from_env(ca_file, verify)
        self.url = url
        self.verifies = check  # whether an https:// coordinator's certificate is checked
        self.timeout = timeout
        self.retry_timeout = retry_timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._t = Transport(
            check_urls(url),
            headers=headers,
            timeout_s=timeout,
            attempts=attempts,
            retry_timeout_s=retry_timeout,
            ca_file=ca_path,
            verify=check,
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._t.aclose()

    async def _get(self, model: type[M], path: str, **kw: Any) -> M:
        return model.model_validate(await self._t.json("GET", path, **kw))

    # ---- jobs -------------------------------------------------------------------------

    async def submit(
        self,
        command: Sequence[str],
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        gpus: int = 0,
        priority: int = 0,
        retries: int = 3,
        timeout: float | None = None,  # noqa: ASYNC109 - the job's limit, not this call's
        idempotency_key: str | None = None,
        tags: Sequence[str] = (),
        cpus: float = 0,
        memory_gb: float = 0,
        gpu_memory_gb: float | None = None,
        gpu_name: str | None = None,
        accelerator: str | None = None,
        nodes: int = 1,
        target: str = "auto",
        preemptible: bool = False,
        workdir: str | Path | None = None,
        package: str | None = None,
        requirements: Sequence[str] | None = None,
        kind: str = "command",
        params: Mapping[str, Any] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> JobView:
        """Queue a command job. ``labels``: globs the worker's labels must match;
        ``tags``, ``cpus``, ``memory_gb``, ``gpu_memory_gb``, ``gpu_name``, ``accelerator``:
        what else its worker must have (docs/scheduling.md); ``nodes``: a gang of that many
        members, one a worker, placed together (torch.distributed's RANK, WORLD_SIZE…);
        ``retries``: how often a lost or timed-out attempt is run again; ``timeout``:
        seconds an attempt may run; ``workdir``: a directory packed, uploaded and unpacked
        where each attempt runs, or ``package``: the SHA-256 ``upload_workdir`` returned;
        ``requirements``: lines of a requirements file, installed in a Python environment
        the worker builds once for them (``requirements_of(path)`` reads a file); ``kind``:
        ``"test"`` runs pytest with ``command`` as its arguments, the tests' outcomes the
        result; ``"train"`` calls ``command[0]`` (``module:function``) with ``params``, the
        job's parameters (docs/task-kinds.md); ``outputs``: globs of files in its directory
        stored as its artifacts once it has succeeded.
        The request always carries an Idempotency-Key
        (``idempotency_key``, else a fresh one), so it is safely retried: a replay returns
        the job already queued, and the same key sent again later does too."""
        if isinstance(command, str):
            raise InvalidInput(
                "command: a list of arguments, not one string (shlex.split it)", field="command"
            )
        fields: dict[str, Any] = {
            "kind": kind,
            "command": list(command) or None,  # a kind other than "command" may have none
            "env": dict(env or {}),
            "worker_labels": dict(labels or {}),
            "gpus": gpus,
            "priority": priority,
            "max_retries": retries,
            "timeout_s": timeout,
            "tags": list(tags),
            "cpus": cpus,
            "memory_gb": memory_gb,
            "gpu_memory_gb": gpu_memory_gb,
            "gpu_name": gpu_name,
            "accelerator": accelerator,
            "nodes": nodes,
            "target": target,
            "preemptible": preemptible,
        }
        if name is not None:
            fields["name"] = name
        if workdir is not None and package is not None:
            raise InvalidInput("give workdir or package, not both", field="workdir")
        if workdir is not None:
            package = await self.upload_workdir(workdir)
        if package is not None:
            fields["workdir"] = package
        if requirements:
            fields["requirements"] = list(requirements)
        if params is not None:
            fields["params"] = dict(params)
        if outputs:
            fields["outputs"] = list(outputs)
        spec = _valid(JobSubmit, fields, _SUBMIT_KEYWORD)
        body = await self._t.json(
            "POST",
            "/api/queue/submit",
            json=spec.model_dump(mode="json", exclude_none=True),
            headers={"Idempotency-Key": idempotency_key or uuid.uuid4().hex},
            idempotent=True,
        )
        return JobView.model_validate(body)

    async def submit_many(self, jobs: Iterable[BatchJob | Mapping[str, Any]]) -> list[JobView]:
        """Queue many jobs: ``BatchJob``s (``call_job(...)`` makes one for a call) or dicts
        of the submit request's fields (``{"command": [...], ...}``). Sent in batches of
        up to 1,000 jobs, each one request and one transaction; returns the jobs in order.
        Every job carries an idempotency key (its own ``idempotency_key``, else a fresh
        one), so a batch is safely retried."""
        return await _calls.submit_many(self, jobs)

    async def submit_call(self, fn: Callable[..., Any] | str, /, *args: Any,
                          **kwargs: Any) -> JobView:  # fmt: skip
        """Queue ``fn(*args, **kwargs)`` as a job of kind ``call``, run in a worker's warm
        interpreter. ``fn``: a function, or ``"module:function"``; arguments must be JSON.
        Its return value is the job's result, as ``{"value": …}``. For job options (labels,
        timeout…) use ``submit_many([call_job(fn, args, kwargs, ...)])``."""
        return (await self.submit_many([_calls.call_job(fn, args, kwargs)]))[0]

    async def map(
        self,
        fn: Callable[..., Any] | str,
        items: Iterable[Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - as concurrent.futures' map
        star: bool = False,
        return_exceptions: bool = False,
        task_timeout: float | None = None,
        retries: int = 3,
        labels: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        gpus: int = 0,
        priority: int = 0,
    ) -> list[Any]:
        """``[fn(item) for item in items]`` as call jobs on the fleet (``fn(*item)`` with
        ``star``): submitted in batches, results in the order of ``items``.

        A call that fails raises ``CallFailed`` (its ``index``, ``item``, ``job`` and the
        traceback as ``error``) once all have ended, for the first failed item; with
        ``return_exceptions`` the ``CallFailed`` takes that item's place in the list
        instead, as in ``asyncio.gather``. ``timeout``: seconds to wait for all, then
        TimeoutError (the jobs go on), as in ``concurrent.futures``' ``map``;
        ``task_timeout``: seconds each call may run."""
        options = {"task_timeout": task_timeout, "retries": retries, "labels": labels,
                   "env": env, "gpus": gpus, "priority": priority}  # fmt: skip
        return await _calls.map_calls(
            self, fn, items, timeout=timeout, star=star,
            return_exceptions=return_exceptions, options=options,
        )  # fmt: skip

    async def job(self, job_id: str) -> JobView:
        """One job, with its attempts."""
        return await self._get(JobView, f"/api/jobs/{job_id}")

    async def metrics(self, job_id: str, names: Iterable[str] = ()) -> dict[str, list[MetricPoint]]:
        """What the job's code reported with ``corral.sdk.report``: each metric's points
        (``step``, ``value``, ``attempt``, ``at``) in the order reported, every page of them;
        ``names`` keeps only those."""
        found: dict[str, list[MetricPoint]] = {}
        cursor: str | None = None
        while True:
            params: list[tuple[str, str]] = [("name", n) for n in names]
            if cursor:
                params.append(("cursor", cursor))
            page = await self._get(JobMetrics, f"/api/jobs/{job_id}/metrics", params=params)
            for series in page.series:
                found.setdefault(series.name, []).extend(series.points)
            cursor = page.next_cursor
            if not cursor:
                return found

    async def why(self, job_id: str) -> JobWhy:
        """Why a queued job is not running (``JobWhy.reasons``, most useful first)."""
        return await self._get(JobWhy, f"/api/jobs/{job_id}/why")

    async def jobs(
        self, state: str | Iterable[str] | None = None, limit: int | None = None, *,
        final_metrics: bool = False, name: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> AsyncIterator[JobView]:  # fmt: skip
        """Jobs newest first, in any of the states ``state`` names, across every page;
        ``limit`` caps how many in all; ``final_metrics``: each with its metrics' last
        values; ``name``: a part of their name; ``labels``: what they ask of their worker's
        labels (``{"pool": "a100"}``)."""
        states = [state] if isinstance(state, str) else list(state or [])
        if limit is not None and limit < 0:
            raise InvalidInput("limit: must be 0 or more", field="limit")
        left = limit
        cursor: str | None = None
        while left is None or left > 0:
            params: list[tuple[str, str | int]] = [("state", str(s)) for s in states]
            params.append(("limit", PAGE_SIZE if left is None else min(left, PAGE_SIZE)))
            if final_metrics:
                params.append(("final_metrics", "true"))
            if name:
                params.append(("name", name))
            params += [("label", f"{k}={v}") for k, v in (labels or {}).items()]
            if cursor:
                params.append(("cursor", cursor))
            page = await self._get(JobList, "/api/jobs", params=params)
            for job in page.jobs:
                yield job
            if left is not None:
                left -= len(page.jobs)
            cursor = page.next_cursor
            if not cursor or not page.jobs:
                return

    # A timeout argument, not asyncio.timeout() around the call: the blocking Client has the
    # same signature, and a caller there has no event loop to time it with.
    async def wait(self, job_id: str, timeout: float | None = None) -> JobView:  # noqa: ASYNC109
        """The job once it has ended (succeeded, failed or cancelled), with its attempts.

        A long poll the coordinator answers when the job ends, not polling; TimeoutError
        after ``timeout`` seconds (the job goes on)."""
        async with asyncio.timeout(timeout):
            await _calls.wait_all(self, [job_id], None)
            return await self.job(job_id)

    async def logs(self, job_id: str, follow: bool = False) -> AsyncIterator[str]:
        """The job's output line by line (without line ends), every attempt, each after the
        first under a ``--- attempt N ---`` line. ``follow``: go on as it is written,
        until the job has ended, resuming where a dropped stream stopped."""
        lines = _stream.Lines()
        if not follow:
            async with self._t.stream("GET", f"/api/jobs/{job_id}/logs") as resp:
                async for text in resp.aiter_text():
                    for line in lines.feed(text):
                        yield line
            for line in lines.rest():
                yield line
            return
        attempt: int | None = None
        async for sse in self._follow(f"/api/jobs/{job_id}/logs"):
            if sse.event != "log":
                continue
            chunk = _json(sse.data)
            number = int(chunk.get("attempt") or 0)
            text = str(chunk.get("data", ""))
            if attempt is not None and number != attempt:
                text = f"\n--- attempt {number} ---\n{text}"  # as the coordinator's text has it
            attempt = number
            for line in lines.feed(text):
                yield line
        for line in lines.rest():
            yield line

    async def events(self, job_id: str) -> AsyncIterator[EventView]:
        """The job's history, oldest first: submitted, assigned, running, lost and why,
        requeued, cancelled, succeeded or failed; each with the ``cause`` that made it."""
        async for event in self._pages(f"/api/jobs/{job_id}/events"):
            yield event

    async def cancel(self, job_id: str) -> JobView:
        """Cancel: a queued job ends at once, a running one is stopped on its worker."""
        body = await self._t.json("POST", f"/api/jobs/{job_id}/cancel", idempotent=True)
        return JobView.model_validate(body)

    async def retry(self, job_id: str) -> JobView:
        """A new job with an ended job's request (a gang's: the whole gang)."""
        body = await self._t.json("POST", f"/api/jobs/{job_id}/retry", idempotent=False)
        return JobView.model_validate(body)

    async def result(self, job_id: str) -> dict[str, Any]:
        """``{job_id, state, result, exit_code, error}``: ``result`` is what the job set
        with ``corral.sdk.set_result``, once it has succeeded."""
        body: dict[str, Any] = await self._t.json("GET", f"/api/jobs/{job_id}/result")
        return body

    # ---- workers (admin) --------------------------------------------------------------

    async def workers(self) -> list[WorkerView]:
        return (await self._get(WorkerList, "/api/admin/workers")).workers

    async def worker(self, ref: str) -> WorkerView:
        """A worker by id, or by the name it was given."""
        return by_ref(await self.workers(), ref, "worker")

    async def create_worker(
        self, name: str, *, persistent: bool = False, labels: Mapping[str, str] | None = None,
        allow_labels: Sequence[str] = (), local: bool = False, shared: bool = False,
    ) -> WorkerCreated:  # fmt: skip
        """A worker and its token (shown only here). ``persistent``: it stays for more
        jobs; else it exits after one. ``labels``: what jobs' label globs match; the worker
        cannot change them. ``allow_labels``: label keys (globs) it may set itself.
        ``local``: the coordinator's own (jobs of target "local" run only on those).
        ``shared`` (an operator's): it runs every tenant's jobs."""
        spec = _worker_spec(name, persistent, labels, allow_labels, local, shared)
        body = await self._t.json("POST", "/api/admin/workers", json=spec.model_dump(mode="json"))
        return WorkerCreated.model_validate(body)

    async def registration(
        self, name: str, *, persistent: bool = False, labels: Mapping[str, str] | None = None,
        allow_labels: Sequence[str] = (),
    ) -> RegistrationIssued:  # fmt: skip
        """A single-use registration token for the worker ``name`` (as ``create_worker``
        describes it): started with it (``corral worker --registration-token``), the worker
        enrols with a certificate for a key of its own, which never leaves it."""
        spec = _worker_spec(name, persistent, labels, allow_labels)
        body = await self._t.json("POST", "/api/admin/workers/registrations",
                                  json=spec.model_dump(mode="json"))  # fmt: skip
        return RegistrationIssued.model_validate(body)

    async def drain_worker(self, ref: str) -> WorkerView:
        """It finishes what it runs and takes nothing new."""
        wid = (await self.worker(ref)).id
        body = await self._t.json("POST", f"/api/admin/workers/{wid}/drain", idempotent=True)
        return WorkerView.model_validate(body)

    async def pause_worker(self, ref: str, *, paused: bool = True) -> WorkerView:
        """No new work goes to it (``paused=False``: again) ; what it runs goes on."""
        wid = (await self.worker(ref)).id
        verb = "pause" if paused else "resume"
        body = await self._t.json("POST", f"/api/admin/workers/{wid}/{verb}", idempotent=True)
        return WorkerView.model_validate(body)

    async def rotate_token(self, ref: str) -> WorkerCreated:
        """A new token for the worker; the old one stops working."""
        wid = (await self.worker(ref)).id
        body = await self._t.json("POST", f"/api/admin/workers/{wid}/token")
        return WorkerCreated.model_validate(body)

    async def remove_worker(self, ref: str) -> WorkerView:
        """Delete an offline worker and its token; returns it as it was."""
        worker = await self.worker(ref)
        await self._t.request("DELETE", f"/api/admin/workers/{worker.id}")
        return worker

    async def worker_events(self, ref: str) -> AsyncIterator[EventView]:
        """The worker's history, oldest first: created, registered (address and
        capabilities), connected, draining, offline and why, token rotated, removed."""
        try:
            wid = (await self.worker(ref)).id
        except NotFound:
            wid = ref  # a removed worker is no longer listed; its history may remain
        async for event in self._pages(f"/api/admin/workers/{wid}/events"):
            yield event

    # ---- audit (admin) ----------------------------------------------------------------

    async def audit(
        self, *, since: datetime | None = None, actor: str | None = None,
        action: str | None = None,
    ) -> AsyncIterator[EventView]:  # fmt: skip
        """The audit log, oldest first: the tenant's (an operator's key: every tenant's)
        changes and refused requests, with actor and source address. ``action`` is a kind
        (``key.created``) or a prefix ending in ``*`` (``key.*``)."""
        query = {"since": since.isoformat() if since else None, "actor": actor, "action": action}
        async for event in self._pages("/api/admin/audit", query):
            yield event

    # ---- the coordinator --------------------------------------------------------------

    async def healthy(self) -> bool:
        """Whether a coordinator answers (one try of each URL, no retries)."""
        try:
            await self._t.request("GET", "/healthz", idempotent=False)
        except CorralError:
            return False
        return True

    def _follow(self, path: str) -> AsyncIterator[ServerSentEvent]:
        return _stream.follow(
            self._t, path, give_up_after_s=self.retry_timeout, connect_timeout_s=self.timeout
        )

    async def _pages(
        self, path: str, query: Mapping[str, str | None] | None = None
    ) -> AsyncIterator[EventView]:
        cursor: str | None = None
        while True:
            params: dict[str, str | int] = {k: v for k, v in (query or {}).items() if v}
            params["limit"] = PAGE_SIZE
            if cursor:
                params["cursor"] = cursor
            page = await self._get(EventList, path, params=params)
            for event in page.events:
                yield event
            cursor = page.next_cursor
            if not cursor or not page.events:
                return


def _json(data: str) -> dict[str, Any]:
    try:
        doc = json.loads(data) if data else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _worker_spec(
    name: str, persistent: bool, labels: Mapping[str, str] | None, allow_labels: Sequence[str],
    local: bool = False, shared: bool = False,
) -> WorkerCreate:  # fmt: skip
    return _valid(
        WorkerCreate,
        {
            "name": name,
            "worker_type": WorkerType.PERSISTENT if persistent else WorkerType.EPHEMERAL,
            "labels": dict(labels or {}),
            "allow_labels": list(allow_labels),
            "local": local,
            "shared": shared,
        },
        {"worker_type": "persistent"},
    )
