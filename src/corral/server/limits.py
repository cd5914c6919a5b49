"""A cap on every request body, enforced before the body is read whole, and on how long it
may take to arrive.

Starlette's own limiter (``max_body_size``) answers in plain text and replaces the
application's answer whenever the declared length is too large, so a client would not get
the problem+json every other refusal has; this one answers like the rest (413
``too_large``, naming ``body``).
"""

from __future__ import annotations

import asyncio
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.protocol import Problem, ProblemField

__all__ = ["BodyLimit"]


class BodyLimit:
    """Pure ASGI: a declared Content-Length past ``max_bytes`` is refused before anything is
    read; a body without one is counted as it arrives and cut off where it passes. A body
    whose next part takes longer than ``timeout_s`` to arrive, or that is not whole
    ``deadline_s`` after it was first read (a client that never finishes its request, or
    sends a byte now and then, holding a connection and a task), is answered 408."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float = 30.0,
        deadline_s: float = 120.0,
        *,
        uploads: str | None = None,
        upload_max_bytes: int = 0,
        upload_deadline_s: float = 0.0,
    ) -> None:
        """``uploads``: a pattern of the paths whose body is a blob, which get the caps
        ``upload_max_bytes`` and ``upload_deadline_s`` instead."""
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.uploads = re.compile(uploads) if uploads else None
        self.upload_max_bytes = upload_max_bytes
        self.upload_deadline_s = upload_deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes, deadline_s = self.max_bytes, self.deadline_s
        if self.uploads is not None and self.uploads.match(scope["path"]):
            max_bytes, deadline_s = self.upload_max_bytes, self.upload_deadline_s
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, 413, "too_large", self._too_large(max_bytes))
            return
        seen = 0
        started = refused = whole = False
        deadline: float | None = None  # the whole body by then, from its first read

        async def counted() -> Message:
            nonlocal seen, refused, whole, deadline
            if refused:
                return {"type": "http.disconnect"}
            if whole:  # the body is in: what follows is a wait for the client to leave
                return await receive()
            now = asyncio.get_running_loop().time()
            if deadline is None:
                deadline = now + deadline_s
            overall = deadline - now < self.timeout_s
            try:
                async with asyncio.timeout_at(min(deadline, now + self.timeout_s)):
                    message = await receive()
            except TimeoutError:
                if started:
                    raise
                refused = True
                if overall:
                    why = f"the request body was not whole within {deadline_s:g} s"
                else:
                    why = f"the request body did not arrive within {self.timeout_s:g} s"
                await self._refuse(send, 408, "request_timeout", why)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                whole = not message.get("more_body", False)
                if seen > max_bytes and not started:
                    # Answered here and now; to the application the client has gone (it stops
                    # reading), and whatever it answers is dropped.
                    refused = True
                    await self._refuse(send, 413, "too_large", self._too_large(max_bytes))
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)

    @staticmethod
    def _too_large(max_bytes: int) -> str:
        return f"the request body is larger than {max_bytes} bytes"

    async def _refuse(self, send: Send, status: int, code: str, why: str) -> None:
        body = Problem(title=code.replace("_", " "), status=status, detail=why, code=code,
                       errors=[ProblemField(field="body", message=why)])  # fmt: skip
        payload = body.model_dump_json().encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})
