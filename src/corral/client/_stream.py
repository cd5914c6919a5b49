"""Following a server-sent event stream that resumes where it dropped (Last-Event-ID),
and cutting a job's output into lines."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping

import httpx
from httpx_sse import EventSource, ServerSentEvent

from corral.model.errors import ServerError, Unreachable
from corral.protocol.transport import RETRYABLE_STATUS, Transport

# The coordinator sends a keep-alive comment every 15 s; a stream silent for longer than
# this is dead (a partition leaves no FIN), so it is reopened instead of waited on for ever.
READ_TIMEOUT_S = 60.0


def _dropped(exc: Exception) -> bool:
    if isinstance(exc, httpx.TransportError | Unreachable):
        return True
    return isinstance(exc, ServerError) and exc.status in RETRYABLE_STATUS


async def follow(
    transport: Transport,
    path: str,
    *,
    give_up_after_s: float,
    connect_timeout_s: float = 10.0,
    params: Mapping[str, str] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """Every event of the stream at ``path`` once, up to and including its ``end`` event.

    A stream that drops (coordinator restart, network) is reopened after the last event id
    seen, so nothing is repeated or missed. Unreachable when no coordinator has answered for
    ``give_up_after_s``. Written here, not with stamina: the budget must start again after
    every event, as a follow may last for hours, while stamina's runs from the first try.
    """
    loop = asyncio.get_running_loop()
    last_id = ""
    failing_since: float | None = None
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        error: Exception | None = None
        try:
            async with transport.stream(
                "GET",
                path,
                params={**(params or {}), "follow": "true"},
                headers=headers,
                timeout=httpx.Timeout(connect_timeout_s, read=READ_TIMEOUT_S),
            ) as resp:
                async for sse in EventSource(resp).aiter_sse():
                    failing_since, failures = None, 0
                    if sse.id:
                        last_id = sse.id
                    yield sse
                    if sse.event == "end":
                        return
        except Exception as exc:
            if not _dropped(exc):
                raise
            error = exc
        # Dropped, or ended without its `end` event: reopen, with backoff while it fails.
        now = loop.time()
        failing_since = failing_since if failing_since is not None else now
        if now - failing_since > give_up_after_s:
            urls = ", ".join(transport.urls)
            raise Unreachable(f"no coordinator answered ({urls}) for {path}: {error}") from error
        failures += 1
        await asyncio.sleep(min(2.0, 0.1 * 2**failures) * random.uniform(0.5, 1.0))


class Lines:
    """Joins output chunks into whole lines (without their line ends)."""

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, data: str) -> list[str]:
        self._buf += data
        *whole, self._buf = self._buf.split("\n")
        return whole

    def rest(self) -> list[str]:
        """What is left of an unterminated last line, as a line of its own."""
        rest, self._buf = self._buf, ""
        return [rest] if rest else []
