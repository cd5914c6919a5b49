"""The blocking client: the AsyncClient's calls run on a private event loop of its own.

So it works where an event loop already runs in the calling thread (a Jupyter notebook,
an async test) as well as in a plain script: nothing here calls ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from corral.client._async import AsyncClient

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _Loop:
    """An event loop on a daemon thread that runs coroutines for other threads."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="corral-client", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("a Client's call from its own loop would wait for itself")
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller stops the call, not just the waiting
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _step(agen: AsyncIterator[T]) -> T:
    return await anext(agen)


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.run(method(self._async, *args, **kwargs))

    return _named(call, method, None)


def _iterating(
    method: Callable[Concatenate[AsyncClient, P], AsyncIterator[T]],
) -> Callable[Concatenate[Client, P], Iterator[T]]:
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._pull(method(self._async, *args, **kwargs))

    return _named(call, method, "Iterator")


def _named(call: F, method: Callable[..., Any], returns: str | None) -> F:
    """Name, docstring and signature of the async method, so help() reads the same."""
    call.__name__ = method.__name__
    call.__qualname__ = f"Client.{method.__name__}"
    call.__doc__ = method.__doc__
    sig = inspect.signature(method)
    if returns:
        inner = str(sig.return_annotation).removeprefix("AsyncIterator")
        sig = sig.replace(return_annotation=f"{returns}{inner}")
    call.__signature__ = sig  # type: ignore[attr-defined]
    return call


class Client:
    """The coordinator's API, blocking: the same calls, arguments, results and errors as
    ``AsyncClient``; what it iterates asynchronously is a plain iterator here.

    Each call runs on a private event loop on a daemon thread, so a Client works from a
    script, from several threads at once, and inside a running event loop (a Jupyter cell).
    ``close()`` it (or use ``with``) when done.
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
        self._async = AsyncClient(
            url, api_key, token=token, token_file=token_file, ca_file=ca_file, verify=verify,
            timeout=timeout,
            attempts=attempts, retry_timeout=retry_timeout,
        )  # fmt: skip
        self._loop = _Loop()

    @property
    def url(self) -> str:
        return self._async.url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._loop.loop.is_closed():
            self._loop.run(self._async.aclose())
        self._loop.stop()

    def _pull(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Items of ``agen`` one at a time through the loop; closing the iterator early
        (``break``) closes the async one, and the stream under it, on its loop."""
        try:
            while True:
                try:
                    yield self._loop.run(_step(agen))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None and not self._loop.loop.is_closed():
                self._loop.run(aclose())

    submit = _blocking(AsyncClient.submit)
    submit_many = _blocking(AsyncClient.submit_many)
    submit_call = _blocking(AsyncClient.submit_call)
    map = _blocking(AsyncClient.map)
    job = _blocking(AsyncClient.job)
    jobs = _iterating(AsyncClient.jobs)
    wait = _blocking(AsyncClient.wait)
    logs = _iterating(AsyncClient.logs)
    events = _iterating(AsyncClient.events)
    cancel = _blocking(AsyncClient.cancel)
    retry = _blocking(AsyncClient.retry)
    result = _blocking(AsyncClient.result)
    workers = _blocking(AsyncClient.workers)
    worker = _blocking(AsyncClient.worker)
    create_worker = _blocking(AsyncClient.create_worker)
    registration = _blocking(AsyncClient.registration)
    drain_worker = _blocking(AsyncClient.drain_worker)
    pause_worker = _blocking(AsyncClient.pause_worker)
    why = _blocking(AsyncClient.why)
    metrics = _blocking(AsyncClient.metrics)
    rotate_token = _blocking(AsyncClient.rotate_token)
    remove_worker = _blocking(AsyncClient.remove_worker)
    worker_events = _iterating(AsyncClient.worker_events)
    healthy = _blocking(AsyncClient.healthy)
    onboard = _blocking(AsyncClient.onboard)
    tenants = _blocking(AsyncClient.tenants)
    tenant = _blocking(AsyncClient.tenant)
    suspend_tenant = _blocking(AsyncClient.suspend_tenant)
    resume_tenant = _blocking(AsyncClient.resume_tenant)
    set_quota = _blocking(AsyncClient.set_quota)
    keys = _blocking(AsyncClient.keys)
    key = _blocking(AsyncClient.key)
    create_key = _blocking(AsyncClient.create_key)
    revoke_key = _blocking(AsyncClient.revoke_key)
    rotate_key = _blocking(AsyncClient.rotate_key)
    token = _blocking(AsyncClient.token)
    audit = _iterating(AsyncClient.audit)
    upload_blob = _blocking(AsyncClient.upload_blob)
    upload_workdir = _blocking(AsyncClient.upload_workdir)
    artifacts = _blocking(AsyncClient.artifacts)
    download_artifact = _blocking(AsyncClient.download_artifact)
