"""The coordinator: builds the FastAPI app around one Core and runs it under uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import text

from corral import __version__
from corral.server import errors, reaper
from corral.server.api import admin, jobs, workers
from corral.server.auth import ensure_admin_key
from corral.server.clock import Clock
from corral.server.config import ServerSettings
from corral.server.core import Core
from corral.server.dispatch import Dispatcher
from corral.server.hub import Hub
from corral.store import Store

OnReady = Callable[[str, str | None], Awaitable[None] | None]


def create_app(
    settings: ServerSettings, *, clock: Clock | None = None, background: bool = True
) -> FastAPI:
    """``background=False`` leaves the dispatcher and reaper to the caller (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = await asyncio.to_thread(Store.open, settings.database_url())
        the_clock = clock or Clock()
        core = Core(store=store, hub=Hub(the_clock), clock=the_clock, settings=settings,
                    started_at=the_clock.now())  # fmt: skip
        dispatcher = Dispatcher(core)
        core.kick_dispatcher = dispatcher.kick
        app.state.core = core
        app.state.dispatcher = dispatcher
        bootstrap = settings.bootstrap_admin_key
        app.state.new_admin_key = await ensure_admin_key(
            core, bootstrap.get_secret_value() if bootstrap else None
        )
        tasks: list[asyncio.Task[Any]] = []
        if background:
            tasks = [
                asyncio.create_task(dispatcher.run(), name="dispatcher"),
                asyncio.create_task(reaper.run(core), name="reaper"),
            ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.close()

    app = FastAPI(
        title="Corral",
        version=__version__,
        description="Runs machine-learning jobs on a fleet of workers.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(workers.router)
    app.include_router(admin.router)
    app.include_router(jobs.queue)
    app.include_router(jobs.router)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> dict[str, str]:
        async with request.app.state.core.store.tx() as conn:
            await conn.execute(text("SELECT 1"))
        return {"status": "ready"}

    return app


async def serve(
    settings: ServerSettings, *, on_ready: OnReady | None = None, app: FastAPI | None = None
) -> None:
    """Run the coordinator until cancelled. ``on_ready(url, new_admin_key)`` once listening."""
    app = app or create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", lifespan="on",
        timeout_graceful_shutdown=3,
    )  # fmt: skip
    server = uvicorn.Server(config)
    # Shielded: cancelling serve() asks uvicorn to shut down gracefully (lifespan included)
    # instead of tearing its task down mid-flight.
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                try:
                    await task  # raises why it could not start (bad database URL, …)
                except SystemExit as exc:  # uvicorn exits when it cannot bind
                    raise OSError(
                        f"cannot listen on {settings.host}:{settings.port} (in use?)"
                    ) from exc
                raise OSError(f"the coordinator on {settings.host}:{settings.port} did not start")
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        if on_ready is not None:
            result = on_ready(f"http://{settings.host}:{port}", app.state.new_admin_key)
            if result is not None:
                await result
        await asyncio.shield(task)
    finally:
        if not task.done():
            server.should_exit = True
            await asyncio.gather(task, return_exceptions=True)
