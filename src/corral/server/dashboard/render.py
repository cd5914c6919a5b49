"""Pages: Jinja2 templates (autoescaped) under ``templates/``, the headers every page
carries, and the route class that turns a refusal into a page instead of JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from corral.model import CorralError
from corral.server import audit
from corral.server.dashboard.session import LoginNeeded, Viewer

# Scripts only from this origin (htmx, uPlot and the page's own script are served by the
# coordinator itself); no frame may hold a page; a form posts only here.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _age(at: datetime | None) -> str:
    """ "3 s", "5 min", "2 h", "4 d": how long ago (or, negative, from now)."""
    if at is None:
        return "—"
    s = (datetime.now(UTC) - at).total_seconds()
    ahead, s = s < 0, abs(s)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            text = f"{s / size:.0f} {unit}"
            break
    else:
        text = f"{s:.0f} s"
    return f"in {text}" if ahead else text


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "—"


env = Environment(
    loader=PackageLoader("corral.server.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["age"] = _age
env.filters["when"] = _when
env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)


def page(
    request: Request, template: str, v: Viewer | None, status: int = 200, **context: Any
) -> HTMLResponse:
    html = env.get_template(template).render(request=request, viewer=v, **context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def back(url: str) -> RedirectResponse:
    """After a form: see the page again (303, so a reload does not post twice)."""
    return RedirectResponse(url, status_code=303, headers=HEADERS)


class HtmlRoute(APIRoute):
    """A dashboard route: no session sends its reader to the login page; a refusal or bad
    input is a page that says why, with the status the API would have answered."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginNeeded:
                if request.headers.get("hx-request"):  # htmx: it follows this header
                    return Response(status_code=401, headers={"HX-Redirect": "/ui/login"})
                target = request.url.path if request.method == "GET" else "/ui/jobs"
                return back(f"/ui/login?next={target}")
            except RequestValidationError as exc:
                said = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}"
                                 for e in exc.errors())  # fmt: skip
                return page(request, "error.html", None, 422, title="bad input", detail=said)
            except CorralError as exc:
                if exc.status in (401, 403):  # recorded as the API records them
                    await audit.refused(request.app.state.core, request, exc)
                return page(request, "error.html", None, exc.status, title=exc.code,
                            detail=exc.detail)  # fmt: skip

        return handle
