"""Cause ids: every change records the stimulus that made it, and log lines carry the same id.

A request is ``req_…`` (or the caller's own ``X-Request-ID``, when it is a sane one), a reaper
tick ``tick_…``, a dispatch round ``round_…``. The id lives in a context variable, bound into
structlog's context for the span of the stimulus.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_current: ContextVar[str | None] = ContextVar("corral_cause", default=None)
# The address a request came from (uvicorn's view: the peer, or what a trusted proxy said
# with --forwarded-allow-ips), recorded with every change it makes.
_source: ContextVar[str | None] = ContextVar("corral_source", default=None)


def new(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


def current() -> str:
    """The id of the stimulus being handled; a fresh one outside any (a test calling in)."""
    return _current.get() or new("op")


def source() -> str | None:
    """The address of the request being handled; None outside a request."""
    return _source.get()


@contextmanager
def bound(cause_id: str) -> Iterator[str]:
    token = _current.set(cause_id)
    try:
        with structlog.contextvars.bound_contextvars(cause=cause_id):
            yield cause_id
    finally:
        _current.reset(token)


class CauseMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): names each request and answers with its id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"),
                     "")  # fmt: skip
        cause_id = given if _SANE.match(given) else new("req")
        header = (HEADER.encode(), cause_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        client = scope.get("client")
        token = _source.set(str(client[0])[:100] if client else None)
        try:
            with bound(cause_id):
                await self.app(scope, receive, send_with_id)
        finally:
            _source.reset(token)
