"""problem+json back into the error classes the coordinator raised.

A client catches ``NotFound`` or ``StaleAttempt`` whichever side of the wire it is on: the
code names the class; an unknown code falls back to the class of its HTTP status.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from corral.model.errors import (
    Conflict,
    CorralError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ServerError,
    TooManyRequests,
    Unauthenticated,
)

__all__ = ["from_problem"]

_BY_STATUS: dict[int, type[CorralError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    422: InvalidInput,
    429: TooManyRequests,
}


def _subclasses(cls: type[CorralError]) -> Iterator[type[CorralError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _by_code() -> dict[str, type[CorralError]]:
    out: dict[str, type[CorralError]] = {}
    for cls in _subclasses(CorralError):
        out.setdefault(cls.code, cls)  # the most general class owns a shared code
    return out


def from_problem(status: int, body: Mapping[str, Any]) -> CorralError:
    """The error a coordinator's answer ``status`` with problem+json ``body`` stands for."""
    code = str(body.get("code") or "")
    cls = _by_code().get(code)
    if cls is None or cls.status != status:
        cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else CorralError)
    detail = str(body.get("detail") or body.get("title") or code or f"HTTP {status}")
    errors = [e for e in body.get("errors") or [] if isinstance(e, Mapping)]
    field = str(errors[0].get("field")) if errors and errors[0].get("field") else None
    exc = cls(detail, field=field)
    exc.status = status  # the answer's own status and code, even where a class was guessed
    exc.code = code or cls.code
    exc.body = dict(body)
    return exc
