"""End-to-end harness: the coordinator and workers as real subprocesses (`corral server`,
`corral worker`), killed for real. Every process a test starts dies with its group after it.
It talks to the API through corral.client's blocking Client, as a script would."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from corral.client import Client, CorralError

ADMIN_KEY = f"ck_e2e_{secrets.token_hex(16)}"
# Fast failure detection so that tests finish in seconds, not minutes.
SERVER_ENV = {
    "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
    "CORRAL_SERVER__REAPER_INTERVAL_S": "0.3",
    "CORRAL_SERVER__STREAM_GRACE_S": "1",
    "CORRAL_SERVER__RETRY_BACKOFF_BASE_S": "0.1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], Any], seconds: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self._fh = log.open("ab")
        self.popen = subprocess.Popen(
            argv, stdout=self._fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL the process alone: its children (the job) are orphaned, as in a crash."""
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(10)

    def term(self, timeout: float = 20) -> int:
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def cleanup(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait(10)
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Fleet:
    """Start and kill coordinators and workers; talk to the API as an admin."""

    def __init__(self, root: Path, db_url: str) -> None:
        self.root = root
        self.db_url = db_url
        self.procs: list[Proc] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Proc | None = None
        self._client: Client | None = None

    def client(self, **kw: Any) -> Client:
        """A new admin Client of this fleet's coordinator (the caller closes it)."""
        return Client(self.url, ADMIN_KEY, **{"timeout": 15, "retry_timeout": 10, **kw})

    @property
    def calls(self) -> Client:
        """The harness's own Client, kept while ``url`` stays (a test may repoint it)."""
        if self._client is not None and self._client.url != self.url:
            self._client.close()
            self._client = None
        if self._client is None:
            self._client = self.client()
        return self._client

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        env.update(PYTHONUNBUFFERED="1", **(extra or {}))
        return env

    def start_server(
        self, port: int | None = None, *, args: tuple[str, ...] = (), **env: str
    ) -> Proc:
        """A coordinator on ``port`` (default: the fleet's own, which the API calls use);
        ``args``: more of ``corral server``'s flags."""
        port = port or self.port
        name = "server" if port == self.port else f"server-{port}"
        argv = [sys.executable, "-m", "corral.cli", "server", "--host", "127.0.0.1",
                "--port", str(port), "--data-dir", str(self.root / name),
                "--db", self.db_url, *args]  # fmt: skip
        proc = Proc(argv, self.root / f"{name}.log", self._env({**SERVER_ENV, **env}))
        self.procs.append(proc)
        if port == self.port:
            self.server = proc
        with Client(f"http://127.0.0.1:{port}", "", timeout=1) as c:
            wait_until(c.healthy, 30, "the coordinator to answer")
        return proc

    def api(self) -> httpx.Client:
        """Raw HTTP, for a test that speaks the wire by hand."""
        return httpx.Client(base_url=self.url, timeout=15,
                            headers={"Authorization": f"Bearer {ADMIN_KEY}"})  # fmt: skip

    def create_worker(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.calls.create_worker(name, labels=labels).model_dump(mode="json")

    def start_worker(
        self, name: str, *, labels: dict[str, str] | None = None, persistent: bool = True,
        slots: int = 1, url: str | None = None, token: str | None = None,
        heartbeat: float = 1.0, data_dir: Path | None = None, **env: str,
    ) -> Proc:  # fmt: skip
        # A worker given an API key or a registration token enrols with a certificate.
        enrols = {"CORRAL_WORKER__API_KEY", "CORRAL_WORKER__REGISTRATION_TOKEN"} & set(env)
        token = token or (None if enrols else self.create_worker(name, labels)["token"])
        argv = [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url",
                url or self.url, "--name", name, "--max-concurrent-tasks", str(slots),
                "--heartbeat-interval", str(heartbeat),
                "--data-dir", str(data_dir or self.root / f"worker-{name}"),
                "--persistent" if persistent else "--ephemeral"]  # fmt: skip
        if labels:
            argv += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
        creds = {"CORRAL_WORKER__TOKEN": token} if token else {}
        # No /metrics unless a test asks (CORRAL_WORKER__METRICS_PORT): many workers, one host.
        quiet = {"CORRAL_WORKER__METRICS_PORT": "0"}
        proc = Proc(argv, self.root / f"worker-{name}.log", self._env({**quiet, **creds, **env}))
        proc.token = token  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    # Jobs and workers come back as the JSON documents the API sends (dicts), which is
    # what the tests compare against.
    _KEYWORD = {"worker_labels": "labels", "max_retries": "retries", "timeout_s": "timeout"}

    def submit(self, command: list[str], **fields: Any) -> dict[str, Any]:
        """``fields`` by their wire names (``worker_labels``, ``max_retries``…)."""
        kw = {self._KEYWORD.get(k, k): v for k, v in fields.items()}
        return self.calls.submit(command, **kw).model_dump(mode="json")

    def job(self, job_id: str) -> dict[str, Any]:
        return self.calls.job(job_id).model_dump(mode="json")

    def logs(self, job_id: str) -> str:
        return "".join(line + "\n" for line in self.calls.logs(job_id))

    def workers(self) -> dict[str, dict[str, Any]]:
        return {w.name: w.model_dump(mode="json") for w in self.calls.workers()}

    def wait_state(self, job_id: str, states: set[str], seconds: float = 60) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            try:
                job = self.job(job_id)
            except CorralError:
                return None  # the coordinator may be restarting
            return job if job["state"] in states else None

        return wait_until(check, seconds, f"job {job_id} to reach {states}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        for p in reversed(self.procs):
            p.cleanup()

    def dump(self) -> str:
        return "\n".join(f"==== {p.log.name}\n{p.output()[-4000:]}" for p in self.procs)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False
    return True
