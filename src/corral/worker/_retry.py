"""Retry or give up: the one reading of a coordinator's error answer on the worker's side, and
its backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from enum import StrEnum

import stamina

from corral.model.errors import (
    Conflict,
    CorralError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unreachable,
)

__all__ = ["Backoff", "Verdict", "retrying", "verdict"]


class Verdict(StrEnum):
    RETRY = "retry"  # away, overloaded or slow (Unreachable, 5xx, 408, 429): the same call later
    FATAL = "fatal"  # the token is refused (401, 403): nothing this worker sends will be taken
    DROP = "drop"  # 404, 409: the coordinator has moved on from what the call was about
    GIVE_UP = "give_up"  # any other 4xx: the same bytes will never be taken


def verdict(exc: CorralError) -> Verdict:
    """What to do about an error the transport raised for a call to the coordinator."""
    if isinstance(exc, Unreachable):  # first: it is a CorralError with a 503 too
        return Verdict.RETRY
    if isinstance(exc, Unauthenticated | PermissionDenied):
        return Verdict.FATAL
    if isinstance(exc, NotFound | Conflict):
        return Verdict.DROP
    if exc.status >= 500 or exc.status in (408, 429):
        return Verdict.RETRY
    return Verdict.GIVE_UP


def retrying(
    *,
    initial_s: float,
    max_s: float,
    also: tuple[type[Exception], ...] = (),
    on_retry: Callable[[Exception], None] | None = None,
) -> AsyncIterator[stamina.Attempt]:
    """stamina's retry_context for a call that must get through however long it takes: it
    retries what ``verdict`` calls RETRY (and ``also``), without limit, and lets anything else
    out; ``on_retry`` hears of each failure that is retried (to log it)."""

    def again(exc: BaseException) -> bool:
        if not isinstance(exc, Exception) or not (
            isinstance(exc, also)
            or (isinstance(exc, CorralError) and verdict(exc) is Verdict.RETRY)
        ):
            return False
        if on_retry is not None:
            on_retry(exc)
        return True

    return stamina.retry_context(
        on=again,
        attempts=None,
        timeout=None,
        wait_initial=initial_s,
        wait_max=max_s,
        wait_jitter=initial_s,
    )


class Backoff:
    """Exponential backoff with jitter for the worker's long-lived loops, which stamina's
    retry_context does not fit: they never end, wait on an event rather than only sleep (a new
    report goes at once), and start again from ``initial_s`` after a success or a stream that
    lived long enough (``reset``)."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._delay = initial_s

    def next(self) -> float:
        """How long to wait now; the next wait is twice as long, up to ``max_s``."""
        wait = self._delay * (0.5 + random.random())  # so workers that failed together spread
        self._delay = min(self._delay * 2, self.max_s)
        return wait

    def reset(self) -> None:
        self._delay = self.initial_s
