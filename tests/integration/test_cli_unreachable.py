"""The CLI against a coordinator that is not there: one line, exit 4, after its retries."""

from __future__ import annotations

import socket
from typing import Any

from typer.testing import CliRunner

from corral.cli._exit import ExitCode
from corral.cli.main import app

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def assert_one_line_error(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("corral: error: ")
    assert "Traceback" not in result.output
    return lines[0]


def test_unreachable_coordinator_is_one_line_and_exit_4() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = assert_one_line_error(
        invoke("jobs", "ls", "--url", f"http://127.0.0.1:{port}"), ExitCode.UNREACHABLE
    )
    assert f"127.0.0.1:{port}" in line


def test_url_and_key_come_from_the_environment() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"CORRAL_URL": f"http://127.0.0.1:{port}", "CORRAL_API_KEY": "k"}
    line = assert_one_line_error(invoke("workers", "ls", env=env), ExitCode.UNREACHABLE)
    assert str(port) in line
