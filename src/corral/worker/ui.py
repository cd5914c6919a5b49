"""The worker's own page (``corral worker --ui``): its status, its log as it is written, what
it runs, and Pause / Resume, which ask the coordinator (``POST /api/workers/pause``).

It holds no secret and shows none, yet its buttons change what the fleet does, so a page of
another site must not press them: every request must name this server (its Host: a page
that rebinds its own name to 127.0.0.1 is refused), and every POST must come from this
page's own origin (Origin, else Referer, when the browser sends one) and carry this process's
random CSRF token. Anything else is a 403 in JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html import escape
from itertools import count
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from corral.model.errors import CorralError
from corral.worker._ui_page import PAGE, SCRIPT, STYLE
from corral.worker.client import BadAnswer
from corral.worker.monitor import LocalView, problem

__all__ = ["CSRF_HEADER", "LogTail", "Page"]

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
PAUSE_TIMEOUT_S = 20.0  # a button's answer: the coordinator's, or that it did not come
_MAX_FORM = 4096
_NOTHING = '<tr><td colspan="4" class="none">nothing runs now</td></tr>'
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_EVERYWHERE = frozenset({"0.0.0.0", "::", ""})
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # its buttons inside another site's frame: no
    "Referrer-Policy": "same-origin",
}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")  # fmt: skip


class LogTail(logging.Handler):
    """The last lines of the worker's own log, numbered, for the page to follow."""

    def __init__(self, size: int = 1000) -> None:
        super().__init__()
        self.lines: deque[tuple[int, str]] = deque(maxlen=size)
        self._seq = count(1)
        shared: list[Any] = [structlog.processors.add_log_level,
                             structlog.stdlib.add_logger_name,
                             structlog.processors.TimeStamper(fmt="iso", utc=True)]  # fmt: skip
        self.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        # Plain tracebacks: a rich one prints frame locals (a token).
                        structlog.dev.ConsoleRenderer(
                            colors=False, exception_formatter=structlog.dev.plain_traceback)],
        ))  # fmt: skip

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.lines.append((next(self._seq), line))

    def since(self, after: int) -> tuple[int, list[str]]:
        """The lines numbered above ``after``, and the number to ask after next."""
        held = list(self.lines)
        lines = [text for n, text in held if n > after]
        return (held[-1][0] if held else after), lines

    def attach(self) -> None:
        """Follow the root logger, which every line of the worker reaches (cli._logging)."""
        logging.getLogger().addHandler(self)

    def detach(self) -> None:
        logging.getLogger().removeHandler(self)


def _names(bind_host: str) -> frozenset[str] | None:
    """The host names a request may give (its Host), or None: any (bound everywhere)."""
    host = bind_host.strip("[]").lower()
    if host in _EVERYWHERE:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return _LOOPBACK | {host} if loopback else frozenset({host})


def _iso(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, float | int):
        value = datetime.fromtimestamp(value, UTC)
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def state(view: LocalView) -> dict[str, Any]:
    """What the page shows, as /api/state sends it."""
    return {
        "name": view.name,
        "worker_id": view.worker_id,
        "status": view.status,
        "connected": view.connected,
        "coordinator_url": view.coordinator_url,
        "paused": view.paused,
        "constrained": view.constrained,
        "certificate_expires_at": _iso(view.certificate_expires_at),
        "running": [
            {"job_id": r.job_id, "attempt": r.attempt, "name": r.name, "since": _iso(r.since)}
            for r in view.running
        ],
    }


class Page:
    """The page's app: ``view`` reads the agent, ``pause`` asks the coordinator."""

    def __init__(
        self,
        view: Callable[[], LocalView],
        pause: Callable[[bool], Awaitable[bool]],
        tail: LogTail,
        *,
        bind_host: str,
    ) -> None:
        self.view = view
        self.pause = pause
        self.tail = tail
        self.names = _names(bind_host)
        self.csrf = secrets.token_urlsafe(32)  # this process's; never logged

    # ---- what a request must be ----------------------------------------------------------

    def _origin(self, request: Request) -> str | None:
        """This page's own origin, as the request names it; None: not a name of ours."""
        host = request.headers.get("host", "")
        try:
            parts = urlsplit(f"//{host}")
            name, port = (parts.hostname or ""), parts.port or 80
        except ValueError:
            return None
        server = request.scope.get("server")
        if not name or (server and port != server[1]):
            return None
        if self.names is not None and name not in self.names:
            return None
        return f"http://{host.lower()}"

    def _foreign(self, request: Request, *, writes: bool) -> Response | None:
        """Why the request is refused (a 403), or None."""
        own = self._origin(request)
        if own is None:
            return _refuse("foreign_host", "this page answers only to its own address")
        if not writes:
            return None
        origin = request.headers.get("origin")
        referer = request.headers.get("referer")
        if origin is not None:
            if origin.lower() != own:
                return _refuse("cross_origin", "a request from another origin")
        elif referer is not None:
            parts = urlsplit(referer)
            if f"{parts.scheme}://{parts.netloc}".lower() != own:
                return _refuse("cross_origin", "a request from another page")
        return None

    async def _token(self, request: Request) -> str | None:
        if (given := request.headers.get(CSRF_HEADER)) is not None:
            return given
        if not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):  # fmt: skip
            return None
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_FORM:
                raise HTTPException(413, "a form of this page is a few bytes")
        values = parse_qs(body.decode("utf-8", "replace"), max_num_fields=10).get(CSRF_FIELD)
        return values[0] if values else None

    # ---- routes --------------------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        if (refused := self._foreign(request, writes=False)) is not None:
            return refused
        v = self.view()
        rows = "".join(
            f"<tr><td>{escape(r.job_id)}</td><td>{r.attempt}</td><td>{escape(r.name or '')}"
            f"</td><td>{escape(_iso(r.since) or 'starting')}</td></tr>"
            for r in v.running
        )
        rows = rows or _NOTHING
        html = PAGE.substitute(
            csrf=escape(self.csrf), name=escape(v.name), status=escape(v.status),
            worker_id=escape(v.worker_id or "(not registered yet)"),
            coordinator_url=escape(v.coordinator_url),
            connection="connected" if v.connected else "not connected",
            cert_expiry=escape(_iso(v.certificate_expires_at) or "(a token, no certificate)"),
            paused="yes" if v.paused else "no", constrained=escape(v.constrained or "-"),
            running=rows,
        )  # fmt: skip
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={**_HEADERS, "Content-Security-Policy": _CSP})  # fmt: skip

    async def script(self, request: Request) -> Response:
        return self._static(request, SCRIPT, "text/javascript; charset=utf-8")

    async def style(self, request: Request) -> Response:
        return self._static(request, STYLE, "text/css; charset=utf-8")

    def _static(self, request: Request, text: str, media_type: str) -> Response:
        if (refused := self._foreign(request, writes=False)) is not None:
            return refused
        return Response(text, media_type=media_type, headers=_HEADERS)

    async def api_state(self, request: Request) -> Response:
        if (refused := self._foreign(request, writes=False)) is not None:
            return refused
        return JSONResponse(state(self.view()), headers=_HEADERS)

    async def api_logs(self, request: Request) -> Response:
        if (refused := self._foreign(request, writes=False)) is not None:
            return refused
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return JSONResponse({"error": "bad_after", "detail": "after: a line number"},
                                status_code=400, headers=_HEADERS)  # fmt: skip
        nxt, lines = self.tail.since(after)
        return JSONResponse({"next": nxt, "lines": lines}, headers=_HEADERS)

    async def set_paused(self, request: Request, paused: bool) -> Response:
        if (refused := self._foreign(request, writes=True)) is not None:
            return refused
        given = await self._token(request)
        if given is None or not hmac.compare_digest(given.encode(), self.csrf.encode()):
            return _refuse("csrf", "this page's CSRF token is missing or wrong")
        try:
            async with asyncio.timeout(PAUSE_TIMEOUT_S):
                now = await self.pause(paused)
        except TimeoutError:
            return JSONResponse({"error": "coordinator_timeout",
                                 "detail": "the coordinator did not answer in time"},
                                status_code=504, headers=_HEADERS)  # fmt: skip
        except (CorralError, BadAnswer) as exc:
            return JSONResponse({"error": "coordinator_refused", "detail": str(exc)},
                                status_code=502, headers=_HEADERS)  # fmt: skip
        if CSRF_HEADER.lower() in request.headers:
            return JSONResponse({"paused": now}, headers=_HEADERS)
        return RedirectResponse("/", status_code=303, headers=_HEADERS)  # a form, without JS

    async def pause_route(self, request: Request) -> Response:
        return await self.set_paused(request, True)

    async def resume_route(self, request: Request) -> Response:
        return await self.set_paused(request, False)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/", self.index, methods=["GET"]),
                Route("/static/ui.js", self.script, methods=["GET"]),
                Route("/static/ui.css", self.style, methods=["GET"]),
                Route("/favicon.ico", _no_icon, methods=["GET"]),
                Route("/api/state", self.api_state, methods=["GET"]),
                Route("/api/logs", self.api_logs, methods=["GET"]),
                Route("/pause", self.pause_route, methods=["POST"]),
                Route("/resume", self.resume_route, methods=["POST"]),
            ],
            exception_handlers={HTTPException: problem},
        )


async def _no_icon(request: Request) -> Response:
    return Response(status_code=204)  # no icon, and no 404 in the browser's console


def _refuse(code: str, detail: str) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=403, headers=_HEADERS)
