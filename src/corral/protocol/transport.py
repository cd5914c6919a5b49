"""The one HTTP transport of workers and the CLI: timeouts, retries with backoff and
jitter (stamina), a circuit breaker per coordinator, and fail-over between coordinators.

Only idempotent requests are retried blindly; the caller says which are.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import stamina

from corral.model.errors import CorralError, Unreachable
from corral.protocol.errors import from_problem

__all__ = ["RETRYABLE_STATUS", "ApiError", "CircuitBreaker", "Transport", "Unreachable"]

RETRYABLE_STATUS = frozenset({502, 503, 504})
_ALL_OPEN = "not tried: it failed too often in a row (circuit open)"


# The coordinator's error answers arrive as the CorralError subclass they stand for
# (``corral.protocol.errors.from_problem``); ``ApiError`` names their base on this side.
ApiError = CorralError


@dataclass
class _Trial:
    """The one call let through to a coordinator whose breaker is open."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[Any] | None = field(default_factory=asyncio.current_task)
    answered: bool | None = None  # None: it ended saying nothing of the coordinator


@dataclass
class CircuitBreaker:
    """Open after ``threshold`` failures in a row: for ``cooldown_s`` calls go to another
    coordinator instead. Then, or at once where there is no other to go to, exactly one trial
    call goes through and the others wait for how it ends: an answer closes the breaker and
    they go on; a failure opens it again and they are refused.

    Written here rather than taken from a library because fail-over needs to ask each
    coordinator's breaker whether it is open, and the breakers we looked at hide that.
    """

    threshold: int = 5
    cooldown_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None
    clock: Any = field(default=time.monotonic, repr=False)
    _trial: _Trial | None = field(default=None, init=False, repr=False)

    def is_open(self) -> bool:
        """Open and still cooling down: calls should go to another coordinator."""
        if self.opened_at is None:
            return False
        elapsed: float = self.clock() - self.opened_at
        return elapsed < self.cooldown_s

    @property
    def trying(self) -> bool:
        """A trial call is out: its outcome is not known yet."""
        return self._trial is not None

    async def admit(self, *, last_resort: bool = False, wait_s: float | None = None) -> bool:
        """Whether a call may go to this coordinator now; waits while a trial is out.
        ``last_resort``: there is no other coordinator to try, so a breaker still cooling
        down lets a trial through too (a coordinator that is back is found at the next call,
        not after the cooldown). A call let through ends in ``success``, ``failure`` or
        ``release``. ``wait_s`` bounds the wait for another caller's trial (a trial on a
        coordinator that hangs must not hold back a caller that has somewhere else to go)."""
        while self.opened_at is not None:
            if (trial := self._trial) is not None:
                try:
                    await asyncio.wait_for(trial.done.wait(), wait_s)
                except TimeoutError:
                    return False
                if trial.answered is None:
                    continue  # it said nothing: the next caller makes the trial
                return trial.answered
            if self.is_open() and not last_resort:
                return False
            self._trial = _Trial()
            return True
        return True

    def success(self) -> None:
        self.failures, self.opened_at = 0, None
        self._end_trial(True)

    def failure(self) -> None:
        self.failures += 1
        if self._trial is not None or self.failures >= self.threshold:
            self.opened_at = self.clock()
        self._end_trial(False)

    def release(self) -> None:
        """A call let through ended saying nothing of the coordinator (cancelled, or an error
        of its own): if it was the trial, the next caller makes one."""
        if self._trial is not None and self._trial.task is asyncio.current_task():
            self._end_trial(None)

    def _end_trial(self, answered: bool | None) -> None:
        if (trial := self._trial) is not None:
            self._trial = None
            trial.answered = answered
            trial.done.set()


def tls_verify(ca_file: str | Path | None, verify: bool = True) -> ssl.SSLContext | bool:
    """How a coordinator's certificate is checked: against the system's store, or only
    ``ca_file`` (a coordinator's internal CA, ``<data-dir>/pki/ca.pem``), or not at all."""
    if not verify:
        return False
    if ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(ca_file))


def insecure(urls: str | Sequence[str], verify: bool = True) -> list[str]:
    """What a person should be told of how these URLs are reached: in the clear over a
    network, or without checking who answers."""
    if isinstance(urls, str):
        urls = [u.strip() for u in urls.split(",") if u.strip()]
    said = []
    for url in urls:
        parsed = httpx.URL(url)
        if parsed.scheme == "http" and not _loopback(parsed.host):
            said.append(f"{url} is plain http on a network: tokens and jobs travel in the clear"
                        " (serve it with corral server --ssl and use https://)")  # fmt: skip
    if not verify:
        said.append("TLS verification is off (--ssl-no-verify): anyone on the path can answer"
                    " as the coordinator; use --ca-file instead outside development")  # fmt: skip
    return said


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        ca_file: str | Path | None = None,
        verify: bool = True,
        auth: httpx.Auth | None = None,
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
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.retry_timeout_s = retry_timeout_s
        self._client = httpx.AsyncClient(
            verify=tls_verify(ca_file, verify),
            headers=dict(headers or {}),
            auth=auth,  # run again for every try: a signed request is signed anew each time
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

    def limit_timeout(self, seconds: float) -> None:
        """Each request gives up after at most ``seconds`` (it never grows past the timeout
        this transport was made with)."""
        self._client.timeout = httpx.Timeout(max(1.0, min(self.timeout_s, seconds)))

    def _wait_s(self) -> float:
        """How long a call waits for another's trial: no longer than it would wait itself."""
        read = self._client.timeout.read
        return read if read is not None else self.timeout_s

    def demote(self, base: str) -> None:
        """``base`` stopped answering (its stream went silent): count a failure, and make the
        next coordinator the first to try."""
        self.breakers[base].failure()
        if self.current == base and len(self.urls) > 1:
            self.current = self.urls[(self.urls.index(base) + 1) % len(self.urls)]

    def _order(self) -> list[str]:
        """Current coordinator first, then the others; open breakers last, and last of all
        those whose trial call is still out (it may be hanging on a frozen coordinator)."""
        rest = [u for u in self.urls if u != self.current]
        b = self.breakers
        return sorted([self.current, *rest], key=lambda u: (b[u].is_open(), b[u].trying))

    def _last_resort(self) -> bool:
        """Every coordinator's breaker is open: there is no better one to go to."""
        return all(b.is_open() for b in self.breakers.values())

    async def _once(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """Each coordinator in turn, skipping those whose breaker is open; if none of the
        others answered, those are tried too (a breaker's cooldown must not leave the
        caller with nowhere to go while a coordinator that is back would answer)."""
        last: Exception | None = None
        skipped: list[str] = []
        for last_resort, bases in ((self._last_resort(), self._order()), (True, skipped)):
            for base in list(bases):
                b = self.breakers[base]
                cooling = b.is_open() and not b.trying  # not a trial that just failed
                out = await self._attempt(base, method, path, last_resort=last_resort, **kw)
                if out is None:
                    if cooling and not last_resort:
                        skipped.append(base)
                    continue
                if isinstance(out, httpx.Response):
                    return out
                last = out
        raise _Retryable(str(last or _ALL_OPEN)) from last

    async def _attempt(
        self, base: str, method: str, path: str, *, last_resort: bool, **kw: Any
    ) -> httpx.Response | Exception | None:
        """The answer, the failure, or None when ``base``'s breaker did not let it through."""
        breaker = self.breakers[base]
        if not await breaker.admit(last_resort=last_resort, wait_s=self._wait_s()):
            return None
        try:
            resp = await self._client.request(method, base + path, **kw)
        except httpx.TransportError as exc:
            breaker.failure()
            return exc
        except BaseException:
            breaker.release()
            raise
        if resp.status_code in RETRYABLE_STATUS:
            breaker.failure()
            return from_problem(resp.status_code, _body(resp))
        breaker.success()
        self.current = base
        return resp

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
        last_resort = self._last_resort()
        for base in self._order():
            breaker = self.breakers[base]
            if not await breaker.admit(last_resort=last_resort, wait_s=self._wait_s()):
                continue
            opened = False
            try:
                async with self._client.stream(method, base + path, **kw) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise from_problem(resp.status_code, _body(resp))
                    breaker.success()
                    self.current = base
                    opened = True
                    yield resp
                    return
            except httpx.TransportError as exc:
                # A failure to open it (refused, or no answer in time: a frozen coordinator
                # still accepts connections) moves on; one that dies mid-way ends here.
                if not opened:
                    breaker.failure()
                    last = exc
                    continue
                raise
            finally:
                breaker.release()  # after success or failure: nothing left to release
        raise Unreachable(f"no coordinator answered ({', '.join(self.urls)}): {last or _ALL_OPEN}")


def _body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {"detail": resp.text[:500] or resp.reason_phrase, "code": "http_error"}
    return body if isinstance(body, dict) else {"detail": str(body), "code": "http_error"}
