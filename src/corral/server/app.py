"""The coordinator: builds the FastAPI app around one Core and runs it under uvicorn."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from corral import __version__
from corral.config.private import private_dir, private_file
from corral.model import CorralError, Permission
from corral.server import dashboard, errors, params, reaper
from corral.server.api import accounts, admin, artifacts, jobs, workers
from corral.server.auth import ensure_operator_key, scraper
from corral.server.cause import CauseMiddleware
from corral.server.clock import Clock
from corral.server.config import ServerSettings
from corral.server.core import Core
from corral.server.dispatch import Dispatcher
from corral.server.headers import with_header_timeout
from corral.server.hub import Hub
from corral.server.limits import BodyLimit
from corral.server.pki import ServerTLS, default_hosts, ensure_ca, server_tls
from corral.server.telemetry import CONTENT_TYPE, HttpTimer, Telemetry
from corral.store import Store, migrate
from corral.store.blobs import open_blob_store
from corral.store.census import census

OnReady = Callable[[str, str | None], Awaitable[None] | None]


def create_app(
    settings: ServerSettings, *, clock: Clock | None = None, background: bool = True
) -> FastAPI:
    """``background=False`` leaves the dispatcher and reaper to the caller (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        private_dir(settings.data_dir)
        # Migrated by serve() before it starts us.
        store = Store(settings.database_url(), settings.db_timeouts())
        the_clock = clock or Clock()
        core = Core(store=store, hub=Hub(the_clock), clock=the_clock, settings=settings,
                    listening_since=the_clock.now(), telemetry=telemetry)  # fmt: skip
        dispatcher = Dispatcher(core)
        core.kick_dispatcher = dispatcher.kick
        core.ca = await asyncio.to_thread(ensure_ca, private_dir(settings.data_dir / "pki"))
        core.blobs = await asyncio.to_thread(open_blob_store, settings.blob_location())
        app.state.core = core
        app.state.dispatcher = dispatcher
        bootstrap = settings.bootstrap_admin_key
        app.state.new_admin_key = await ensure_operator_key(
            core, bootstrap.get_secret_value() if bootstrap else None
        )
        await core.tokens.start(store.tx)
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

    telemetry = Telemetry()  # made here: the request timer wraps the app before it starts
    app = FastAPI(
        title="Corral",
        version=__version__,
        description="Runs machine-learning jobs on a fleet of workers.",
        lifespan=lifespan,
        # Runs before every route's own dependencies, auth included.
        dependencies=[Depends(params.storable)],
    )
    errors.install(app)
    errors.document(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes,
                       timeout_s=settings.body_timeout_s,
                       deadline_s=settings.body_deadline_s, uploads=artifacts.UPLOADS,
                       upload_max_bytes=settings.blob_max_bytes,
                       upload_deadline_s=settings.blob_deadline_s)  # fmt: skip
    app.add_middleware(HttpTimer, telemetry=telemetry)  # a refused body is counted too
    app.add_middleware(CauseMiddleware)  # outermost: a refused body gets its request id too
    app.include_router(workers.router)
    app.include_router(admin.router)
    app.include_router(accounts.tenants)
    app.include_router(accounts.keys)
    app.include_router(accounts.auth)
    app.include_router(accounts.public)
    app.include_router(accounts.audit_log)
    app.include_router(jobs.queue)
    app.include_router(jobs.router)
    app.include_router(artifacts.blobs)
    app.include_router(artifacts.jobs)
    app.include_router(artifacts.workers)
    dashboard.install(app)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text"}},
    )
    async def metrics(
        request: Request,
        _: Annotated[Any, Security(scraper, scopes=[Permission.TENANTS_ADMIN.value])],
    ) -> Response:
        """Prometheus metrics (docs/monitoring.md): the settings' scrape token
        (``CORRAL_SERVER__METRICS_TOKEN``) or an operator's key."""
        core = request.app.state.core
        async with core.store.tx() as conn:
            core.telemetry.set_census(await census(conn), core.clock.now())
        return Response(core.telemetry.render(), media_type=CONTENT_TYPE)

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        """Ready when what a request needs works: a write to the database commits and the
        data directory takes a file. 503 with the failing check otherwise."""
        checks = await readiness(request.app.state.core)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "unready", "checks": checks},
                            status_code=200 if ok else 503,
                            headers={} if ok else {"Retry-After": "5"})  # fmt: skip

    return app


async def readiness(core: Core) -> dict[str, str]:
    out: dict[str, str] = {}
    s = core.settings
    try:
        async with asyncio.timeout(s.db_connect_timeout_s + s.db_pool_timeout_s):
            await core.store.probe(core.clock.now())
        out["database"] = "ok"
    except (SQLAlchemyError, CorralError, OSError, TimeoutError) as exc:
        out["database"] = _first_line(exc) or "timed out"
    try:
        async with asyncio.timeout(s.db_connect_timeout_s):
            await asyncio.to_thread(_write_probe, s.data_dir)
        out["data_dir"] = "ok"
    except (OSError, TimeoutError) as exc:
        out["data_dir"] = _first_line(exc) or "timed out"
    return out


def _write_probe(data_dir: Path) -> None:
    """A byte written and synced to the data directory, then removed."""
    fd, name = tempfile.mkstemp(prefix=".readyz-", dir=data_dir)
    try:
        os.write(fd, b"1")
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class StartupFailed(Exception):
    """The coordinator could not start (bad data dir, database URL, or address)."""


def _prepare(settings: ServerSettings) -> None:
    """Everything that can fail for a reason the user must fix, before uvicorn starts."""
    try:
        private_dir(settings.data_dir)
    except OSError as exc:
        raise StartupFailed(f"cannot use data dir {settings.data_dir}: {exc}") from exc
    url = settings.database_url()
    try:
        if settings.db_url is None:  # the embedded store: the database is ours to create
            private_file(settings.data_dir / "corral.db")
    except OSError as exc:
        raise StartupFailed(f"cannot open the database: {exc}") from exc
    try:
        migrate(url)
    except ImportError as exc:
        raise StartupFailed(f"no driver for {url!r} ({exc}); for PostgreSQL install "
                            "corral[postgres]") from exc  # fmt: skip
    except SQLAlchemyError as exc:
        raise StartupFailed(f"cannot open the database: {_first_line(exc)}") from exc


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise StartupFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _tls(settings: ServerSettings) -> ServerTLS | None:
    """What HTTPS is served with: the operator's certificate, or the internal CA's."""
    if settings.ssl_certfile is not None and settings.ssl_keyfile is not None:
        for path in (settings.ssl_certfile, settings.ssl_keyfile):
            if not path.is_file():
                raise StartupFailed(f"cannot serve HTTPS: {path} is not a readable file")
        return ServerTLS(settings.ssl_certfile, settings.ssl_keyfile, None)
    if not settings.ssl:
        return None
    try:
        return server_tls(settings.data_dir, default_hosts(settings.host, settings.ssl_hosts))
    except (OSError, ValueError) as exc:
        raise StartupFailed(f"cannot make the coordinator's certificate: {exc}") from exc


async def serve(
    settings: ServerSettings, *, on_ready: OnReady | None = None, app: FastAPI | None = None
) -> None:
    """Run the coordinator until cancelled. ``on_ready(url, new_admin_key)`` once listening.

    Raises StartupFailed, with a one-line reason, when it cannot start.
    """
    await asyncio.to_thread(_prepare, settings)
    # Bound here rather than by uvicorn, which exits the process when it cannot bind.
    sock = _bind(settings.host, settings.port)
    app = app or create_app(settings)
    tls = await asyncio.to_thread(_tls, settings)
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=None,
        access_log=settings.access_log,
        lifespan="on",
        timeout_graceful_shutdown=3,
        http=with_header_timeout(settings.header_timeout_s),
        ssl_certfile=str(tls.certfile) if tls else None,
        ssl_keyfile=str(tls.keyfile) if tls else None,
    )
    server = uvicorn.Server(config)
    # Shielded: cancelling serve() asks uvicorn to shut down gracefully (lifespan included)
    # instead of tearing its task down mid-flight.
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task
                raise StartupFailed("the coordinator stopped while starting; see its log")
            await asyncio.sleep(0.05)
        port = sock.getsockname()[1]
        if on_ready is not None:
            scheme = "https" if tls else "http"
            result = on_ready(f"{scheme}://{settings.host}:{port}", app.state.new_admin_key)
            if result is not None:
                await result
        await asyncio.shield(task)
    finally:
        if not task.done():
            server.should_exit = True
            await asyncio.gather(task, return_exceptions=True)
        sock.close()
