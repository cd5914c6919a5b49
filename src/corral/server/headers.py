"""A limit on how long a request's headers may take to arrive (a slow-headers client).

uvicorn (0.55) has none: its keep-alive timer runs only between the requests of a
connection and stops at the first byte of the next one, and a new connection has no timer
at all until its headers are whole; ``h11_max_incomplete_event_size`` bounds how large the
headers may grow, not how long they take. A client that sends a byte every few seconds holds
a socket and a parser for as long as it likes, and enough of them hold every descriptor.

So the coordinator serves HTTP/1.1 with uvicorn's httptools protocol and one timer more:
armed when a connection opens and when each request's first byte arrives, disarmed when its
headers are complete; if it fires the connection is answered 408 and closed. What comes
after the headers is the body limits' (``server.limits.BodyLimit``); an answer that streams
for hours (an event stream, a followed log) is not affected. Written here because no
library adds it to uvicorn; it overrides three of the protocol's callbacks and calls the
originals.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["with_header_timeout"]

_SAID = b"the request's headers took too long"
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_SAID), _SAID))  # fmt: skip


class _HeaderTimeout(HttpToolsProtocol):
    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_due: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._headers_due is None:
            self._headers_due = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._headers_due is not None:
            self._headers_due.cancel()
            self._headers_due = None

    def _too_slow(self) -> None:
        self._headers_due = None
        if not self.transport.is_closing():
            self.transport.write(_408)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def with_header_timeout(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` protocol class, with each request's headers due in ``seconds``."""
    return type("HeaderTimeoutProtocol", (_HeaderTimeout,), {"header_timeout_s": seconds})
