"""A coordinator and N persistent workers on this machine, as one process tree.

Used by ``corral up`` and the dispatch benchmark. The coordinator runs in this process on
a thread and event loop of its own (the benchmark makes it a child process instead):
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
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from corral.cli._client import Client
from corral.cli._exit import ExitCode, Failure
from corral.cli._net import ensure_free, free_port
from corral.model import WorkerStatus, WorkerType
from corral.protocol import WorkerCreate

READY_STATES = {WorkerStatus.IDLE, WorkerStatus.BUSY}


class _ServerThread:
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
        self.task = asyncio.current_task()  # type: ignore[assignment]

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


async def _spawn(
    argv: list[str], log_path: Path, env: dict[str, str]
) -> asyncio.subprocess.Process:
    """A child in its own process group (a terminal's Ctrl-C reaches it only through us),
    its output appended to ``log_path``."""
    log = _open_append(log_path)
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            process_group=0,
        )
    finally:
        log.close()  # the child has its own copy


def _open_append(path: Path) -> IO[bytes]:
    return open(path, "ab")  # the caller closes it


class _ServerProcess:
    """``corral server`` as a child process: what a benchmark wants, so that the client
    that measures does not share the coordinator's interpreter."""

    def __init__(self, settings: Any, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> tuple[str, str | None]:
        s = self.settings
        port = s.port or free_port(s.host)
        url = f"http://{s.host}:{port}"
        env = {**os.environ, "CORRAL_BOOTSTRAP_ADMIN_KEY": s.bootstrap_admin_key.get_secret_value()}
        self.proc = await _spawn(
            [sys.executable, "-m", "corral.cli", "server",
             "--host", s.host, "--port", str(port), "--data-dir", str(s.data_dir),
             "--log-level", "warning"],
            self.log_path,
            env,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        async with Client(url, attempts=1) as client:
            while not await client.healthy():
                if self.proc.returncode is not None or loop.time() > deadline:
                    raise RuntimeError(f"see {self.log_path}")
                await asyncio.sleep(0.1)
        return url, None

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
    """Start with ``async with LocalFleet(...) as fleet``; leaving it stops everything."""

    data_dir: Path
    workers: int = 2
    host: str = "127.0.0.1"
    port: int = 8001
    slots: int = 1  # --max-concurrent-tasks of each worker
    admin_key: str | None = None
    worker_env: dict[str, str] = field(default_factory=dict)
    stop_grace_s: float = 20.0
    worker_log_level: str = "info"
    server_process: bool = False  # a child process instead of a thread of this one

    url: str = ""
    local_workers: list[LocalWorker] = field(default_factory=list)
    _server: _ServerThread | _ServerProcess | None = None

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
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # A key of our own as the bootstrap key: valid on every start, so we can use it.
        self.admin_key = self.admin_key or os.environ.get("CORRAL_BOOTSTRAP_ADMIN_KEY")
        self.admin_key = self.admin_key or f"ck_{secrets.token_urlsafe(32)}"
        settings = ServerSettings(
            host=self.host,
            port=self.port,
            data_dir=self.data_dir,
            bootstrap_admin_key=self.admin_key,
        )
        if self.server_process:
            self._server = _ServerProcess(settings, self.data_dir / "coordinator.log")
        else:
            self._server = _ServerThread(settings)
        try:
            self.url, _ = await self._server.start()
        except StartupFailed as exc:  # its data dir or address cannot be used
            raise Failure(str(exc), ExitCode.USAGE) from None
        except (OSError, SystemExit, RuntimeError) as exc:
            raise Failure(
                f"the coordinator did not start on {self.host}:{self.port}: {exc or 'see above'}",
                ExitCode.JOB_FAILED,
            ) from None
        async with self.client() as client:
            for i in range(1, self.workers + 1):
                token = await self._token(client, f"local-{i}")
                await self._start_worker(f"local-{i}", token)

    def client(self, **kw: Any) -> Client:
        return Client(self.url, self.admin_key, **kw)

    async def _token(self, client: Client, name: str) -> str:
        """A fresh token for worker ``name``; the one a previous run made is reused."""
        kept = [w for w in (await client.workers()).workers if w.name == name]
        if kept:
            return (await client.rotate_token(kept[0].id)).token
        spec = WorkerCreate(name=name, worker_type=WorkerType.PERSISTENT)
        return (await client.create_worker(spec)).token

    async def _start_worker(self, name: str, token: str) -> None:
        wdir = self.data_dir / "workers" / name
        wdir.mkdir(parents=True, exist_ok=True)
        worker = LocalWorker(name=name, data_dir=wdir, log_path=wdir / "worker.log")
        # The token travels in the environment: argv is visible to every user of the host.
        env = {**os.environ, **self.worker_env, "CORRAL_WORKER_TOKEN": token}
        env.pop("CORRAL_BOOTSTRAP_ADMIN_KEY", None)
        # `python` in a job means this interpreter (and its packages), activated or not.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        worker.proc = await _spawn(
            [sys.executable, "-m", "corral.cli", "worker",
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
                listing = (await client.workers()).workers
                if names <= {w.name for w in listing if w.status in READY_STATES}:
                    return
                if loop.time() > deadline:
                    raise Failure(
                        f"workers did not connect within {timeout_s:.0f}s; see "
                        f"{self.data_dir / 'workers'}/*/worker.log",
                        ExitCode.JOB_FAILED,
                    )
                await asyncio.sleep(poll_s)

    def pids(self) -> dict[str, int]:
        """Child processes by role: ``coordinator`` (when a process) and each worker."""
        out = {}
        if isinstance(self._server, _ServerProcess) and self._server.proc is not None:
            out["coordinator"] = self._server.proc.pid
        for w in self.local_workers:
            if w.proc is not None:
                out[w.name] = w.proc.pid
        return out

    def check_workers(self) -> None:
        """Fail with the worker's last log lines if one of them exited."""
        for w in self.local_workers:
            if w.proc is not None and w.proc.returncode is not None:
                raise Failure(
                    f"worker {w.name} exited with code {w.proc.returncode}: "
                    f"{w.log_tail(1) or 'no output'} (log: {w.log_path})",
                    ExitCode.JOB_FAILED,
                )

    async def watch(self, poll_s: float = 1.0) -> None:
        """Serve until cancelled; fail if the coordinator or a worker dies under us."""
        while True:
            await asyncio.sleep(poll_s)
            if self._server is not None and not self._server.alive:
                raise Failure("the coordinator stopped unexpectedly", ExitCode.JOB_FAILED)
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
