"""Every error leaves as application/problem+json with a stable code; never a traceback."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException

from corral.model import CorralError, PermissionDenied, TooManyRequests, Unauthenticated
from corral.protocol import Problem, ProblemField
from corral.server.audit import refused as audit_refused

log = structlog.get_logger("corral.server")
PROBLEM = "application/problem+json"
RETRY_AFTER_S = "2"
# What a database out of reach, timed out or full raises (a pool wait past its timeout is
# sqlalchemy.exc.TimeoutError).
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                sa_exc.DisconnectionError)  # fmt: skip


def problem(
    status: int, code: str, detail: str, errors: list[ProblemField] | None = None
) -> JSONResponse:
    body = Problem(title=code.replace("_", " "), status=status, detail=detail, code=code,
                   errors=errors or [])  # fmt: skip
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM)


def _field(loc: tuple[object, ...]) -> str:
    """A pydantic location as a path: ``jobs[3].command``."""
    path = ""
    for p in loc:
        if p == "body" and not path:
            continue
        path += f"[{p}]" if isinstance(p, int) else f".{p}" if path else str(p)
    return path or "body"


def _unparsable_body(exc: HTTPException) -> str | None:
    """Why FastAPI could not parse a JSON body, where it says only "400, error parsing"."""
    # FastAPI turns any failure of json.loads but a JSONDecodeError (already a 422) into a
    # bare 400; these two are the client's input, so they get the 422 that names the body.
    if isinstance(exc.__cause__, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc.__cause__, UnicodeDecodeError):
        return "JSON must be UTF-8"
    return None


def refused(request: Request, status: int, code: str, detail: str) -> None:
    """A refused request leaves a trace on the coordinator: route, caller, reason."""
    route = request.scope.get("route")
    log.info(
        "request.refused",
        method=request.method,
        route=getattr(route, "path", request.url.path),
        status=status,
        code=code,
        detail=detail[:500],
        caller=getattr(request.state, "caller", None),
        client=request.client.host if request.client else None,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def _corral(request: Request, exc: CorralError) -> JSONResponse:
        errors = [ProblemField(field=exc.field, message=exc.detail)] if exc.field else []
        if exc.status >= 500:
            log.warning("request.failed", route=request.url.path, code=exc.code, detail=exc.detail)
            resp = problem(exc.status, exc.code, exc.detail, errors)
            resp.headers["Retry-After"] = RETRY_AFTER_S
            return resp
        refused(request, exc.status, exc.code, exc.detail)
        resp = problem(exc.status, exc.code, exc.detail, errors)
        if isinstance(exc, TooManyRequests):
            resp.headers["Retry-After"] = str(exc.retry_after_s)
        elif exc.status in (Unauthenticated.status, PermissionDenied.status):
            await audit_refused(request.app.state.core, request, exc)
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            ProblemField(field=_field(tuple(e["loc"])), message=e["msg"]) for e in exc.errors()
        ]
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors) or "invalid request"
        refused(request, 422, "invalid_input", detail)
        return problem(422, "invalid_input", detail, errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if why := _unparsable_body(exc):
            refused(request, 422, "invalid_input", f"body: {why}")
            return problem(
                422, "invalid_input", f"body: {why}", [ProblemField(field="body", message=why)]
            )
        refused(request, exc.status_code, f"http_{exc.status_code}", str(exc.detail))
        return problem(exc.status_code, f"http_{exc.status_code}", str(exc.detail))

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # Out of reach, timed out, full: the client's retry of an idempotent call (it retries
        # 503) engages, and it knows when to come back. A bug in a query stays a 500.
        if not isinstance(exc, _UNAVAILABLE) and not getattr(exc, "connection_invalidated", False):
            log.exception("database error", error=repr(exc))
            return problem(500, "internal", "internal error; see the coordinator's log")
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0][:300]
        log.warning("database.unavailable", route=request.url.path, error=first)
        resp = problem(503, "unavailable", f"the coordinator's database is unavailable: {first}")
        resp.headers["Retry-After"] = RETRY_AFTER_S
        return resp

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", error=repr(exc))
        return problem(500, "internal", "internal error; see the coordinator's log")


def document(app: FastAPI) -> None:
    """The OpenAPI document says what an error is: every status of 400 and above, and any
    other (``default``), is ``application/problem+json`` with the ``Problem`` schema, never
    FastAPI's own validation error, which this server does not send."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = get_openapi(title=app.title, version=app.version, description=app.description,
                          routes=app.routes)  # fmt: skip
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        defs = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(defs.pop("$defs", {}))
        schemas["Problem"] = defs
        error = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for ops in doc.get("paths", {}).values():
            for op in ops.values():
                responses = op.setdefault("responses", {})
                for code, answer in responses.items():
                    if code[:1] in "45":
                        answer["content"] = error
                        if code == "422":
                            answer["description"] = "Invalid input: the errors name each field"
                responses["default"] = {
                    "description": "An error: 401, 403, 404, 409, 413, 422, 429, 503…",
                    "content": error,
                }
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
