"""`corral server` in a process of its own: uvicorn's error and access lines come out as
structlog JSON lines when stderr is not a terminal; --access-log, its env var and the
config file turn the access log on."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(90)


class Server:
    def __init__(self, tmp_path: Path, args: list[str], env: dict[str, str]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
        argv = [sys.executable, "-m", "corral.cli", "server", *args,
                "--port", "0", "--data-dir", str(tmp_path / "data")]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**base, **env},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_for(
            lambda line: "coordinator listening on" in line, "the server to listen"
        )
        url = re.search(r"http://\S+", line)
        assert url is not None, line
        self.url = url.group(0)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for(self, match: Any, what: str, seconds: float = 30) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                assert self.proc.poll() is None, f"the server exited: {self.seen}"
                continue
            self.seen.append(line)
            if match(line):
                return line
        raise AssertionError(f"timed out waiting for {what}: {self.seen}")

    def json_line(self, logger: str, what: str) -> dict[str, Any]:
        def match(line: str) -> bool:
            return line.startswith("{") and json.loads(line).get("logger") == logger

        return json.loads(self.wait_for(match, what))  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _garbage(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        s.recv(1024)


@pytest.mark.parametrize("how", ["flag", "env", "file"])
def test_access_and_error_lines_are_json(tmp_path: Path, how: str) -> None:
    (tmp_path / "corral.toml").write_text("[server]\naccess_log = true\n")
    args, env = {
        "flag": (["--access-log"], {}),
        "env": ([], {"CORRAL_SERVER__ACCESS_LOG": "true"}),
        "file": ([], {"CORRAL_CONFIG": str(tmp_path / "corral.toml")}),
    }[how]
    server = Server(tmp_path, args, env)
    try:
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        access = server.json_line("uvicorn.access", "the access line")
        assert access["level"] == "info" and "GET /healthz" in access["event"]
        assert "timestamp" in access
        _garbage(server.url)
        error = server.json_line("uvicorn.error", "uvicorn's warning")
        assert error["level"] == "warning" and "Invalid HTTP request" in error["event"]
    finally:
        server.stop()


def test_no_access_log_by_default(tmp_path: Path) -> None:
    server = Server(tmp_path, [], {})
    try:
        assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
        _garbage(server.url)  # an error line still comes, after any access line would have
        server.json_line("uvicorn.error", "uvicorn's warning")
        assert not any('"uvicorn.access"' in line for line in server.seen)
    finally:
        server.stop()
