"""Test harness: fresh databases (clones of a migrated template) and a real coordinator on a
random loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _dbtemplate import pg_template, sqlite_clone

PG_ADMIN_URL = os.environ.get("CORRAL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@functools.cache  # one probe per session, not one connection more per test
def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: no PostgreSQL here
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"


@contextlib.contextmanager
def fresh_database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the newest revision: a copy of the migrated SQLite template, or a
    new PostgreSQL database cloned from the template database (dropped afterwards)."""
    if kind == "sqlite":
        yield sqlite_clone(tmp_path / "corral.db")
        return
    why = _pg_available()
    if why:
        if os.environ.get("CORRAL_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    import psycopg

    template = pg_template(PG_ADMIN_URL)
    name = f"corral_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Coordinator:
    url: str
    admin_key: str
    data_dir: Path
    app: Any
    loop: asyncio.AbstractEventLoop

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            timeout=10,
        )

    def call(self, coro: Any, timeout: float = 10) -> Any:
        """Run a coroutine on the coordinator's own loop (to reach its Core)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def start_coordinator(
    data_dir: Path, db_url: str, clock: Any = None, *, reaper: bool = True, **overrides: Any
) -> tuple[Coordinator, Any]:
    """``reaper=False``: no reaper loop; the test ticks it (``reaper.tick``) exactly when it
    means to. The dispatcher loop runs either way."""
    from corral.server.app import create_app, serve
    from corral.server.config import ServerSettings

    # Coordinators of one store share their bootstrap key: another key would replace it.
    key = overrides.pop("bootstrap_admin_key", None) or f"ck_test_{secrets.token_hex(16)}"
    # The attack tests refuse hundreds of requests from one address, loopback, by design;
    # the test of that limit sets its own.
    overrides.setdefault("auth_failures_per_minute", 100_000)
    settings = ServerSettings(
        host="127.0.0.1", port=0, data_dir=data_dir, db_url=db_url, bootstrap_admin_key=key,
        **overrides,
    )  # fmt: skip
    ready = threading.Event()
    box: dict[str, Any] = {}

    def on_ready(url: str, _new: str | None) -> None:
        if not reaper:  # background=False leaves both loops to us: run the dispatcher's
            box["dispatcher"] = asyncio.create_task(box["app"].state.dispatcher.run())
        box["url"] = url
        ready.set()

    box["app"] = create_app(settings, clock=clock, background=reaper)

    async def run() -> None:
        box["task"] = asyncio.create_task(serve(settings, on_ready=on_ready, app=box["app"]))
        await asyncio.gather(box["task"], return_exceptions=True)

    def main() -> None:
        # The Runner, as asyncio.run does, ends what is left on the loop before closing it
        # (a dispatcher we started, if serve() ended on its own; async generators; the
        # default executor's threads), so that nothing outlives the coordinator.
        try:
            with asyncio.Runner() as runner:
                box["loop"] = runner.get_loop()
                runner.run(run())
        finally:
            ready.set()

    thread = threading.Thread(target=main, name="coordinator", daemon=True)
    thread.start()
    if not ready.wait(30) or "url" not in box:
        raise RuntimeError("coordinator did not start")
    coord = Coordinator(box["url"], key, data_dir, box["app"], box["loop"])

    async def stop_dispatcher() -> None:
        box["dispatcher"].cancel()
        await asyncio.gather(box["dispatcher"], return_exceptions=True)

    def stop() -> None:
        # As the app's own lifespan does: the dispatcher ends before the store closes.
        if "dispatcher" in box and not box["loop"].is_closed():
            asyncio.run_coroutine_threadsafe(stop_dispatcher(), box["loop"]).result(15)
        box["loop"].call_soon_threadsafe(box["task"].cancel)
        thread.join(15)

    return coord, stop
