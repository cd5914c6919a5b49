"""The coordinator's dashboard at ``/``: server-rendered pages (Jinja2) made live with htmx
and uPlot, both vendored under ``static/`` (no build step, no CDN). See docs/dashboard.md."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from corral.server.dashboard import fleet_pages, pages

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.include_router(pages.router)
    app.include_router(fleet_pages.router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/ui/jobs", status_code=303)
