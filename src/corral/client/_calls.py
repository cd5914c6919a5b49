"""Many jobs at once and call jobs: ``submit_many``, ``submit_call`` and ``map``.

A function is sent as ``module:qualname`` when the worker can import it by that name (the
same as pickling it by reference, and readable in ``corral jobs show``); anything else (a
lambda, a closure, a function of ``__main__``) is pickled by value with cloudpickle, when
installed (``pip install 'corral[calls]'``), or by reference with the standard pickle.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import pickle
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from corral.model import CorralError, InvalidInput, JobState
from corral.protocol import CALL_KIND, MAX_BATCH, BatchJob, BatchResult, JobView, WaitResult

if TYPE_CHECKING:
    from corral.client._async import AsyncClient

__all__ = ["CallFailed", "call_job", "map_calls", "submit_many"]

_WAIT_S = 30.0  # one long poll of POST /api/jobs/wait

# Keyword of ``call_job``/``map`` -> the wire field it sets, so an InvalidInput names it.
_OPTION = {"labels": "worker_labels", "retries": "max_retries", "task_timeout": "timeout_s"}


class CallFailed(CorralError):
    """A call job did not succeed."""

    code = "call_failed"

    def __init__(self, index: int, item: Any, job: JobView) -> None:
        error = (job.error or job.state.value).rstrip()
        super().__init__(f"item {index} ({item!r:.100}) {job.state.value}: {error}")
        self.index = index
        self.item = item
        self.job = job
        self.error = job.error  # the call's traceback, or why it stopped


def target_of(fn: Callable[..., Any] | str) -> dict[str, str]:
    """``{"target": "module:qualname"}`` or ``{"pickled": base64}`` for ``fn``."""
    if isinstance(fn, str):
        return {"target": fn}
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and module != "__main__" and "<" not in qualname:
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            obj = None
        if obj is fn:
            return {"target": f"{module}:{qualname}"}
    try:
        import cloudpickle  # type: ignore[import-untyped,import-not-found,unused-ignore]

        data = cloudpickle.dumps(fn)
    except ImportError:
        try:
            data = pickle.dumps(fn)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise InvalidInput(
                f"fn: {fn!r} cannot be sent by name or pickled by reference ({exc}); define "
                "it in a module the worker can import, or pip install 'corral[calls]'",
                field="fn",
            ) from exc
    return {"pickled": base64.b64encode(data).decode()}


def call_job(
    fn: Callable[..., Any] | str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    gpus: int = 0,
    priority: int = 0,
    retries: int = 3,
    task_timeout: float | None = None,
    idempotency_key: str | None = None,
) -> BatchJob:
    """One call job, checked, for ``submit_many``: ``fn(*args, **kwargs)`` on a worker."""
    fields: dict[str, Any] = {
        "kind": CALL_KIND,
        "call": {**target_of(fn), "args": list(args), "kwargs": dict(kwargs or {})},
        "env": dict(env or {}), "worker_labels": dict(labels or {}), "gpus": gpus,
        "priority": priority, "max_retries": retries, "timeout_s": task_timeout,
        "idempotency_key": idempotency_key,
    }  # fmt: skip
    if name is not None:
        fields["name"] = name
    return _checked(fields, "", {v: k for k, v in _OPTION.items()})


def _checked(fields: Any, where: str, names: Mapping[str, str]) -> BatchJob:
    try:
        return BatchJob.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        if loc:
            loc[0] = names.get(loc[0], loc[0])
        path = where + ".".join(loc) if where else ".".join(loc)
        raise InvalidInput(f"{path}: {first['msg']}", field=path) from None


async def submit_many(
    client: AsyncClient, jobs: Iterable[BatchJob | Mapping[str, Any]]
) -> list[JobView]:
    """Queue ``jobs`` (BatchJob, or dicts of JobSubmit's fields), in batches of at most
    MAX_BATCH, each batch one request and one transaction; returns the jobs in order.

    Each job without an idempotency key gets a fresh one, so a batch is safely retried
    after a lost answer: its jobs are not queued twice."""
    items: list[BatchJob] = []
    for i, job in enumerate(jobs):
        spec = job if isinstance(job, BatchJob) else _checked(dict(job), f"jobs[{i}].", {})
        if spec.idempotency_key is None:
            spec = spec.model_copy(update={"idempotency_key": uuid.uuid4().hex})
        items.append(spec)
    out: list[JobView] = []
    for start in range(0, len(items), MAX_BATCH):
        chunk = items[start : start + MAX_BATCH]
        body = await client._t.json(
            "POST", "/api/queue/submit-batch", idempotent=True,
            json={"jobs": [j.model_dump(mode="json", exclude_none=True) for j in chunk]},
        )  # fmt: skip
        out += BatchResult.model_validate(body).jobs
    return out


async def wait_all(
    client: AsyncClient,
    ids: Sequence[str],
    timeout: float | None,  # noqa: ASYNC109 - a deadline over many requests
) -> dict[str, JobView]:
    """id -> the job once it has ended, for every id; TimeoutError after ``timeout``."""
    ended: dict[str, JobView] = {}
    pending = list(dict.fromkeys(ids))
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while pending:
        left = _WAIT_S if deadline is None else min(_WAIT_S, deadline - loop.time())
        if left <= 0:
            raise TimeoutError(f"{len(pending)} of {len(ids)} jobs had not ended")
        body = await client._t.json(
            "POST", "/api/jobs/wait", idempotent=True, timeout=left + client.timeout,
            json={"ids": pending[:MAX_BATCH], "timeout_s": left},
        )  # fmt: skip
        for job in WaitResult.model_validate(body).jobs:
            ended[job.id] = job
        pending = [j for j in pending if j not in ended]
    return ended


def value_of(job: JobView) -> Any:
    """What the call returned: its result is ``{"value": …}``."""
    return (job.result or {}).get("value")


async def map_calls(
    client: AsyncClient,
    fn: Callable[..., Any] | str,
    items: Iterable[Any],
    *,
    timeout: float | None,  # noqa: ASYNC109 - as above
    star: bool,
    return_exceptions: bool,
    options: Mapping[str, Any],
) -> list[Any]:
    items = list(items)
    specs = [call_job(fn, tuple(it) if star else (it,), **options) for it in items]
    jobs = await submit_many(client, specs)
    ended = await wait_all(client, [j.id for j in jobs], timeout)
    out: list[Any] = []
    for i, (item, job) in enumerate(zip(items, jobs, strict=True)):
        done = ended[job.id]
        if done.state is JobState.SUCCEEDED:
            out.append(value_of(done))
        elif return_exceptions:
            out.append(CallFailed(i, item, done))
        else:
            raise CallFailed(i, item, done)
    return out
