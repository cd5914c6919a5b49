"""The one HTTP transport of workers and the CLI: timeouts, retries with backoff and
jitter (stamina), a circuit breaker per coordinator, and fail-over between coordinators.

Only idempotent requests are retried blindly; the caller says which are.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import stamina

from corral.model.errors import CorralError, Unreachable
from corral.protocol.errors import from_problem

__all__ = ["RETRYABLE_STATUS", "ApiError", "CircuitBreaker", "Transport", "Unreachable"]

RETRYABLE_STATUS = frozenset({502, 503, 504})


# The coordinator's error answers arrive as the CorralError subclass they stand for
# (``corral.protocol.errors.from_problem``); ``ApiError`` names their base on this side.
ApiError = CorralError


@dataclass
class CircuitBreaker:
    """Open after ``threshold`` failures in a row; let one call through after ``cooldown_s``.

    Written here rather than taken from a library because fail-over needs to ask each
    coordinator's breaker whether it is open, and the breakers we looked at hide that.
    """

    threshold: int = 5
    cooldown_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None
    clock: Any = field(default=time.monotonic, repr=False)

    def allows(self) -> bool:
        if self.opened_at is None:
            return True
        elapsed: float = self.clock() - self.opened_at
        return elapsed >= self.cooldown_s  # half-open: one try

    def success(self) -> None:
        self.failures, self.opened_at = 0, None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock()


class _Retryable(Exception):
    pass


class Transport:
    """Async client for one or several coordinator URLs (the first that answers wins)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        attempts: int = 5,
        retry_timeout_s: float = 60.0,
        breaker_threshold: int = 5,
        breaker_cooldown_s: float = 10.0,
    ) -> None:
        if isinstance(urls, str):
            urls = [u for u in urls.split(",") if u.strip()]
        if not urls:
            raise ValueError("at least one coordinator URL is needed")
        self.urls = [u.strip().rstrip("/") for u in urls]
        self.breakers = {
            u: CircuitBreaker(breaker_threshold, breaker_cooldown_s) for u in self.urls
        }
        self.current = self.urls[0]
        self.attempts = attempts
        self.retry_timeout_s = retry_timeout_s
        self._client = httpx.AsyncClient(
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Transport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def set_header(self, name: str, value: str) -> None:
        self._client.headers[name] = value

    def _order(self) -> list[str]:
        """Current coordinator first, then the others; open breakers last."""
        rest = [u for u in self.urls if u != self.current]
        ordered = [self.current, *rest]
        return [u for u in ordered if self.breakers[u].allows()] or ordered

    async def _once(self, method: str, path: str, **kw: Any) -> httpx.Response:
        last: Exception | None = None
        for base in self._order():
            breaker = self.breakers[base]
            try:
                resp = await self._client.request(method, base + path, **kw)
            except httpx.TransportError as exc:
                breaker.failure()
                last = exc
                continue
            if resp.status_code in RETRYABLE_STATUS:
                breaker.failure()
                last = from_problem(resp.status_code, _body(resp))
                continue
            breaker.success()
            self.current = base
            return resp
        raise _Retryable(str(last)) from last

    async def request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kw: Any
    ) -> httpx.Response:
        """Send; retry with backoff and jitter when ``idempotent`` (default: GET/HEAD/DELETE).

        Raises the CorralError the answer stands for and Unreachable when no coordinator answered.
        """
        if idempotent is None:
            idempotent = method.upper() in {"GET", "HEAD", "DELETE", "PUT"}
        try:
            if idempotent:
                async for attempt in stamina.retry_context(
                    on=_Retryable, attempts=self.attempts, timeout=self.retry_timeout_s
                ):
                    with attempt:
                        resp = await self._once(method, path, **kw)
            else:
                resp = await self._once(method, path, **kw)
        except _Retryable as exc:
            raise Unreachable(f"no coordinator answered ({', '.join(self.urls)}): {exc}") from exc
        if resp.status_code >= 400:
            raise from_problem(resp.status_code, _body(resp))
        return resp

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self.request(method, path, **kw)
        return resp.json() if resp.content else None

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kw: Any) -> AsyncIterator[httpx.Response]:
        """Open a long-lived response (SSE) on the first coordinator that answers."""
        last: Exception | None = None
        for base in self._order():
            try:
                async with self._client.stream(method, base + path, **kw) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise from_problem(resp.status_code, _body(resp))
                    self.breakers[base].success()
                    self.current = base
                    yield resp
                    return
            except httpx.TransportError as exc:
                # Only a failure to connect moves on; a stream that dies mid-way ends here.
                if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                    self.breakers[base].failure()
                    last = exc
                    continue
                raise
        raise Unreachable(f"no coordinator answered ({', '.join(self.urls)}): {last}")


def _body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"detail": resp.text[:500] or resp.reason_phrase, "code": "http_error"}
    return body if isinstance(body, dict) else {"detail": str(body), "code": "http_error"}
