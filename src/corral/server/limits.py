"""A cap on every request body, enforced before the body is read whole.

Starlette's own limiter (``max_body_size``) answers in plain text and replaces the
application's answer whenever the declared length is too large, so a client would not get
the problem+json every other refusal has; this one answers like the rest (413
``too_large``, naming ``body``).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.protocol import Problem, ProblemField

__all__ = ["BodyLimit"]


class BodyLimit:
    """Pure ASGI: a declared Content-Length past ``max_bytes`` is refused before anything is
    read; a body without one is counted as it arrives and cut off where it passes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        started = refused = False

        async def counted() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes and not started:
                    # Answered here and now; to the application the client has gone (it stops
                    # reading), and whatever it answers is dropped.
                    refused = True
                    await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted, watched)

    async def _refuse(self, send: Send) -> None:
        why = f"the request body is larger than {self.max_bytes} bytes"
        body = Problem(title="too large", status=413, detail=why, code="too_large",
                       errors=[ProblemField(field="body", message=why)])  # fmt: skip
        payload = body.model_dump_json().encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})
