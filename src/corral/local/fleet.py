"""A coordinator and N persistent workers on this machine, as one process tree.

Used by ``corral up``, the benchmarks and the tests. The coordinator runs in this process on
a thread and event loop of its own (``server_process=True`` makes it a child process):
uvicorn takes over SIGINT only on the main thread, so on Ctrl-C this process decides the
order — workers first (they report and disconnect while the coordinator still listens),
the coordinator last. Workers run in their own process group, so a terminal's Ctrl-C
reaches them only through us, as one SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from corral.client import AsyncClient, NotFound
from corral.local._procs import CORRAL, ensure_free, spawn
from corral.local._server import ServerProcess, ServerThread
from corral.local.errors import BadSetting, FleetError
from corral.model import WorkerStatus

READY_STATES = {WorkerStatus.IDLE, WorkerStatus.BUSY}


# Variables that carry a secret of the fleet (both their names): a local worker gets none.
_SECRETS = frozenset({
    "CORRAL_WORKER__TOKEN", "CORRAL_WORKER_TOKEN", "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY",
    "CORRAL_BOOTSTRAP_ADMIN_KEY", "CORRAL_API_KEY",
})  # fmt: skip


@dataclass
class LocalWorker:
    name: str
    data_dir: Path
    log_path: Path
    proc: asyncio.subprocess.Process | None = None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class LocalFleet:
    """Start with ``async with LocalFleet(...) as fleet``; leaving it stops everything.

    Raises FleetError when a process does not start or dies, BadSetting (a FleetError) when
    its data directory, database or address cannot be used."""

    data_dir: Path
    workers: int = 2
    host: str = "127.0.0.1"
    port: int = 8001
    slots: int = 1  # --max-concurrent-tasks of each worker
    admin_key: str | None = None
    worker_env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # its workers', set at their creation
    stop_grace_s: float = 20.0
    worker_log_level: str = "info"
    server_process: bool = False  # a child process instead of a thread of this one
    db_url: str | None = None  # SQLAlchemy URL; None: SQLite in data_dir
    server: Any = None  # the coordinator's other settings (ServerSettings), if not defaults

    url: str = ""
    local_workers: list[LocalWorker] = field(default_factory=list)
    _server: ServerThread | ServerProcess | None = None

    async def __aenter__(self) -> LocalFleet:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        from corral.server.app import StartupFailed
        from corral.server.config import ServerSettings

        ensure_free(self.host, self.port)
        self.data_dir = self.data_dir.resolve()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadSetting(f"cannot use {self.data_dir}: {exc.strerror or exc}") from None
        # A key of our own as the bootstrap key: valid on every start, so we can use it.
        self.admin_key = self.admin_key or f"ck_{secrets.token_urlsafe(32)}"
        given: dict[str, Any] = {
            "host": self.host, "port": self.port, "data_dir": self.data_dir,
            "db_url": self.db_url, "bootstrap_admin_key": SecretStr(self.admin_key),
        }  # fmt: skip
        settings = (ServerSettings(**given) if self.server is None
                    else self.server.model_copy(update=given))  # fmt: skip
        if self.server_process:
            self._server = ServerProcess(settings, self.data_dir / "coordinator.log")
        else:
            self._server = ServerThread(settings)
        try:
            self.url, _ = await self._server.start()
        except StartupFailed as exc:  # its data dir or address cannot be used
            raise BadSetting(str(exc)) from None
        except (OSError, SystemExit, RuntimeError) as exc:
            raise FleetError(
                f"the coordinator did not start on {self.host}:{self.port}: {exc or 'see above'}"
            ) from None
        async with self.client() as client:
            for i in range(1, self.workers + 1):
                token = await self._token(client, f"local-{i}")
                await self._start_worker(f"local-{i}", token)

    def client(self) -> AsyncClient:
        """An admin client of this fleet's coordinator."""
        return AsyncClient(self.url, self.admin_key)

    async def _token(self, client: AsyncClient, name: str) -> str:
        """A fresh token for worker ``name``; the one a previous run made is reused."""
        try:
            return (await client.rotate_token(name)).token
        except NotFound:
            return (await client.create_worker(name, persistent=True, labels=self.labels,
                                               local=True)).token  # fmt: skip

    async def _start_worker(self, name: str, token: str) -> None:
        wdir = self.data_dir / "workers" / name
        wdir.mkdir(parents=True, exist_ok=True)
        worker = LocalWorker(name=name, data_dir=wdir, log_path=wdir / "worker.log")
        # The token travels in the environment: argv is visible to every user of the host.
        # Only its own token, under its one name; none of the fleet's other secrets.
        env = {k: v for k, v in {**os.environ, **self.worker_env}.items() if k not in _SECRETS}
        env["CORRAL_WORKER__TOKEN"] = token
        # Its jobs run as this user: where the machine allows it, in namespaces that hide
        # the whole data directory (the database, admin.key, the other workers' journals).
        env.setdefault("CORRAL_WORKER__SANDBOX", "auto")
        env.setdefault("CORRAL_WORKER__SANDBOX_HIDE", str(self.data_dir))
        # Several workers on one host cannot share the default /metrics port: none, unless asked.
        env.setdefault("CORRAL_WORKER__METRICS_PORT", "0")
        # `python` in a job means this interpreter (and its packages), activated or not.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        worker.proc = await spawn(
            [*CORRAL, "worker",
             "--orchestrator-url", self.url,
             "--name", name,
             "--persistent",
             "--max-concurrent-tasks", str(self.slots),
             "--data-dir", str(wdir),
             "--log-level", self.worker_log_level],
            worker.log_path,
            env,
        )  # fmt: skip
        self.local_workers.append(worker)

    async def wait_ready(self, timeout_s: float = 60.0, poll_s: float = 0.2) -> None:
        """Until every local worker is connected; fail early if one of them exits."""
        names = {w.name for w in self.local_workers}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with self.client() as client:
            while True:
                self.check_workers()
                listing = await client.workers()
                if names <= {w.name for w in listing if w.status in READY_STATES}:
                    return
                if loop.time() > deadline:
                    raise FleetError(
                        f"workers did not connect within {timeout_s:.0f}s; see "
                        f"{self.data_dir / 'workers'}/*/worker.log"
                    )
                await asyncio.sleep(poll_s)

    def pids(self) -> dict[str, int]:
        """Child processes by role: ``coordinator`` (when a process) and each worker."""
        out = {}
        if isinstance(self._server, ServerProcess) and self._server.proc is not None:
            out["coordinator"] = self._server.proc.pid
        for w in self.local_workers:
            if w.proc is not None:
                out[w.name] = w.proc.pid
        return out

    def check_workers(self) -> None:
        """FleetError with the worker's last log line if one of them exited."""
        for w in self.local_workers:
            if w.proc is not None and w.proc.returncode is not None:
                raise FleetError(
                    f"worker {w.name} exited with code {w.proc.returncode}: "
                    f"{w.log_tail(1) or 'no output'} (log: {w.log_path})"
                )

    async def watch(self, poll_s: float = 1.0) -> None:
        """Serve until cancelled; FleetError if the coordinator or a worker dies under us."""
        while True:
            await asyncio.sleep(poll_s)
            if self._server is not None and not self._server.alive:
                raise FleetError("the coordinator stopped unexpectedly")
            self.check_workers()

    async def stop(self) -> None:
        """SIGTERM the workers, wait, SIGKILL stragglers, then stop the coordinator."""
        procs = [w.proc for w in self.local_workers if w.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        if procs:
            _, pending = await asyncio.wait(
                [asyncio.ensure_future(p.wait()) for p in procs], timeout=self.stop_grace_s
            )
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its jobs
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await self._server.stop()
