"""The coordinator of a local fleet: on a thread of this process, or as a child process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

from corral.client import AsyncClient, Unauthenticated
from corral.local._procs import CORRAL, free_port, spawn
from corral.local.errors import FleetError


class ServerThread:
    """``corral.server.app.serve`` on a thread of its own, stoppable from another loop."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self._thread = threading.Thread(target=self._main, name="corral-coordinator", daemon=True)
        self._ready: asyncio.Future[tuple[str, str | None]] | None = None
        self._caller: asyncio.AbstractEventLoop | None = None

    async def start(self) -> tuple[str, str | None]:
        """Start and wait until it listens; return ``(url, new_admin_key)``."""
        self._caller = asyncio.get_running_loop()
        self._ready = self._caller.create_future()
        self._thread.start()
        return await self._ready

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the caller, not lost
            self._tell(exc)

    async def _serve(self) -> None:
        from corral.server.app import serve

        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()

        def on_ready(url: str, new_admin_key: str | None) -> None:
            self._tell((url, new_admin_key))

        with contextlib.suppress(asyncio.CancelledError):
            await serve(self.settings, on_ready=on_ready)
        self._tell(RuntimeError("the coordinator stopped"))

    def _tell(self, what: tuple[str, str | None] | BaseException) -> None:
        fut, caller = self._ready, self._caller
        if fut is None or caller is None or caller.is_closed():
            return

        def settle() -> None:
            if fut.done():
                return
            if isinstance(what, BaseException):
                fut.set_exception(what)
            else:
                fut.set_result(what)

        caller.call_soon_threadsafe(settle)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self.loop is not None and self.task is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                self.loop.call_soon_threadsafe(self.task.cancel)
        await asyncio.to_thread(self._thread.join, timeout_s)


class ServerProcess:
    """``corral server`` as a child process: what a benchmark wants, so that the client
    that measures does not share the coordinator's interpreter."""

    def __init__(self, settings: Any, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> tuple[str, str | None]:
        s = self.settings
        # A free port is free only until someone takes it: between our look and the child's
        # bind another process may, and its /healthz would answer for ours. So the
        # coordinator that answers must take our key; if it does not, ours lost the port
        # and starts again on another (a port that was asked for is not changed).
        for _ in range(3 if not s.port else 1):
            url = await self._start_on(s.port or free_port(s.host))
            if url is not None:
                return url, None
        raise FleetError(f"the coordinator did not start; see {self.log_path}")

    async def _start_on(self, port: int) -> str | None:
        s = self.settings
        url = f"http://{s.host}:{port}"
        secret = s.bootstrap_admin_key.get_secret_value()
        env = {**os.environ, "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY": secret}
        env.pop("CORRAL_BOOTSTRAP_ADMIN_KEY", None)  # the old name would say it is deprecated
        if s.db_url:  # in the environment: a password in argv is visible to every user
            env["CORRAL_SERVER__DB_URL"] = s.db_url
        self.proc = await spawn(
            [*CORRAL, "server", "--host", s.host, "--port", str(port),
             "--data-dir", str(s.data_dir), "--log-level", "warning"],
            self.log_path,
            env,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        async with AsyncClient(url, "") as client:
            while not await client.healthy():
                if self.proc.returncode is not None or loop.time() > deadline:
                    raise FleetError(f"the coordinator did not start; see {self.log_path}")
                await asyncio.sleep(0.1)
        try:
            async with AsyncClient(url, secret, attempts=1, retry_timeout=5) as ours:
                async for _ in ours.jobs(limit=1):
                    break
        except Unauthenticated:  # another coordinator has the port
            await self.stop()
            return None
        return url

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
