"""The CLI without a coordinator: parsing, one-line errors, exit codes, log following."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from corral.cli import _parse
from corral.cli._client import explain
from corral.cli._exit import ExitCode
from corral.cli._follow import Lines, follow, parse_metric
from corral.cli.main import app
from corral.cli.up import _admin_key
from corral.protocol import JobView
from corral.protocol.errors import from_problem
from corral.protocol.transport import Unreachable

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


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("submit", "jobs", "workers", "server", "worker", "up"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["submit", "--label", "nokey", "--", "true"], "--label"),
        (["submit", "--env", "=x", "true"], "--env"),
        (["submit", "--env", "1BAD=x", "true"], "--env"),
        (["submit", "--priority", "5000", "true"], "--priority"),
        (["submit", "--timeout", "-1", "true"], "--timeout"),
        (["submit", "--gpus", "x", "true"], "--gpus"),
        (["submit", "--bogus", "true"], "--bogus"),
        (["submit"], "COMMAND"),
        (["jobs", "ls", "--state", "bogus"], "--state"),
        (["jobs", "ls", "--limit", "0"], "--limit"),
        (["workers", "create", "w1", "--labels", "nokey"], "--labels"),
        (["worker", "--worker-token", "t"], "--orchestrator-url"),
        (["worker", "--orchestrator-url", "ftp://x", "--worker-token", "t"], "http"),
        (["up", "--workers", "0"], "--workers"),
        (["nosuchcommand"], "nosuchcommand"),
        (["jobs", "ls", "--url", "http://[::1"], "http://[::1"),
        (["jobs", "ls", "--url", "localhost:8001"], "http://"),
        (["jobs", "ls", "--url", "http://127.0.0.1:99999"], "99999"),
        (["workers", "ls", "--url", " , "], "CORRAL_URL"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], mentions: str) -> None:
    line = assert_one_line_error(invoke(*args), ExitCode.USAGE)
    assert mentions.lower() in line.lower()


def test_unreachable_coordinator_is_one_line_and_exit_4() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    line = assert_one_line_error(
        invoke("jobs", "ls", "--url", f"http://127.0.0.1:{port}"), ExitCode.UNREACHABLE
    )
    assert f"127.0.0.1:{port}" in line


def test_drain_help_says_a_persistent_worker_stays_until_stopped() -> None:
    # It stays connected, taking nothing, so that a process manager does not restart it in a
    # loop; only an offline worker can be removed.
    text = " ".join(invoke("workers", "drain", "--help").stdout.split())
    assert "ephemeral worker then exits" in text
    assert "persistent one stays connected, draining, until its process is stopped" in text
    assert "then leave" not in text


def test_url_and_key_come_from_the_environment() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"CORRAL_URL": f"http://127.0.0.1:{port}", "CORRAL_API_KEY": "k"}
    line = assert_one_line_error(invoke("workers", "ls", env=env), ExitCode.UNREACHABLE)
    assert str(port) in line


def test_pairs_env_and_labels() -> None:
    assert _parse.pairs(["a=1", "b=x=y", "c="], flag="--label") == {"a": "1", "b": "x=y", "c": ""}
    assert _parse.env(["A_1=x y", "B="]) == {"A_1": "x y", "B": ""}
    assert _parse.labels("gpu=a100, zone=eu") == {"gpu": "a100", "zone": "eu"}
    assert _parse.labels(None) == {}
    for bad in (["nokey"], ["=v"]):
        with pytest.raises(typer.BadParameter):
            _parse.pairs(bad, flag="--label")
    for bad in (["=x"], ["1A=x"], ["A-B=x"], ["novalue"]):
        with pytest.raises(typer.BadParameter):
            _parse.env(bad)


def test_explain_maps_answers_to_exit_codes() -> None:
    problem = {
        "title": "Unprocessable",
        "status": 422,
        "detail": "the request is not valid",
        "code": "invalid_input",
        "errors": [{"field": "body.priority", "message": "must be <= 1000"}],
    }
    failure = explain(from_problem(422, problem), "http://c")
    assert failure.exit_code == ExitCode.USAGE
    assert "body.priority: must be <= 1000" in failure.format_message()
    assert "invalid_input" in failure.format_message()

    auth = explain(from_problem(401, {"detail": "invalid API key", "code": "unauthenticated"}), "u")
    assert auth.exit_code == ExitCode.USAGE and "CORRAL_API_KEY" in auth.format_message()

    broken = explain(from_problem(500, {"detail": "boom", "code": "internal"}), "u")
    assert broken.exit_code == ExitCode.SERVER_ERROR

    gone = explain(Unreachable("no"), "http://c:1")
    assert gone.exit_code == ExitCode.UNREACHABLE and "http://c:1" in gone.format_message()


def test_lines_join_chunks_into_whole_lines() -> None:
    lines = Lines()
    assert lines.feed("ab") == []
    assert lines.feed("c\nde\nf") == ["abc\n", "de\n"]
    assert lines.rest() == "f"
    assert lines.rest() == ""


def test_parse_metric_reads_sdk_lines_only() -> None:
    assert parse_metric('corral.metric {"step":3,"loss":0.5}\n') == {"step": 3, "loss": 0.5}
    assert parse_metric("corral.metric not json\n") is None
    assert parse_metric("corral.metric [1]\n") is None
    assert parse_metric("epoch 3 loss 0.5\n") is None


def _job(state: str) -> JobView:
    now = datetime.now(UTC)
    return JobView(
        id="job_1", name="j", state=state, kind="command", command=["true"],
        worker_labels={}, gpus=0, priority=0, max_retries=0, timeout_s=None, attempt=1,
        worker_id="w_1", created_at=now, started_at=now, finished_at=None,
        exit_code=None, error=None, result=None,
    )  # fmt: skip


class _DroppingClient:
    """Resumes after Last-Event-ID like the coordinator, and cuts the first connection in
    the middle of a line."""

    def __init__(self) -> None:
        self.connections = 0
        self.chunks = [(1, "one\ntw"), (1, "o\n"), (2, "retry\n")]

    async def job(self, job_id: str) -> JobView:
        return _job("running" if self.connections < 2 else "succeeded")

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[tuple[str, dict, int]]:
        self.connections += 1
        for event_id, (attempt, data) in enumerate(self.chunks, start=1):
            if self.connections == 1 and event_id == 2:
                raise Unreachable("stream cut")
            if event_id > after:
                yield "log", {"attempt": attempt, "data": data}, event_id
        yield "end", {"state": "succeeded"}, 0


async def test_follow_reconnects_without_repeating_output(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import corral.cli._follow as follow_mod

    async def no_sleep(_: float) -> None:
        return None

    monkeypatch.setattr(follow_mod.asyncio, "sleep", no_sleep)
    client = _DroppingClient()
    final = await follow(client, "job_1", echo=True, status=False)  # type: ignore[arg-type]
    assert client.connections == 2
    assert capsys.readouterr().out == "one\ntwo\nretry\n"
    assert final.state == "succeeded"


async def test_follow_gives_up_when_no_coordinator_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Gone(_DroppingClient):
        async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[tuple[str, dict, int]]:
            raise Unreachable("down")
            yield  # an async generator that never yields

    with pytest.raises(Unreachable):
        await follow(Gone(), "job_1", echo=False, status=False, give_up_after_s=0.05)  # type: ignore[arg-type]


def test_up_keeps_its_admin_key_private_and_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_BOOTSTRAP_ADMIN_KEY", raising=False)
    key = _admin_key(tmp_path)
    assert key.startswith("ck_") and len(key) > 30
    assert _admin_key(tmp_path) == key
    assert os.stat(tmp_path / "admin.key").st_mode & 0o077 == 0
    monkeypatch.setenv("CORRAL_BOOTSTRAP_ADMIN_KEY", "ck_from_env")
    assert _admin_key(tmp_path) == "ck_from_env"


@pytest.mark.parametrize("tty", [True, False])
def test_logged_tracebacks_never_show_frame_locals(tty: bool) -> None:
    import io

    import structlog

    from corral.cli._logging import configure

    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    stream = Stream()
    configure("info", stream=stream)
    try:
        token = "wt_must_not_be_logged"
        raise RuntimeError(f"failed after {len(token)} characters")
    except RuntimeError:
        structlog.get_logger().exception("boom")
    finally:
        structlog.reset_defaults()
    assert "boom" in stream.getvalue() and "RuntimeError" in stream.getvalue()
    assert "wt_must_not_be_logged" not in stream.getvalue()


def corral(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a process of its own: a coordinator's start-up, uncaught, would
    print a traceback from uvicorn or asyncio here."""
    return subprocess.run([sys.executable, "-m", "corral.cli", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=90, check=False)  # fmt: skip


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["server", "--db", "bogus://x"], "bogus"),
        (["server", "--db", "postgresql://u@127.0.0.1:{port}/db"], "127.0.0.1"),  # or no driver
        (["server", "--data-dir", "{file}"], "{file}"),
        (["up", "--data-dir", "{file}"], "{file}"),
        (["up", "--workers", "1", "--data-dir", "{unusable_db}"], "cannot open the database"),
    ],
)
def test_a_coordinator_that_cannot_start_says_why_in_one_line(
    args: list[str], mentions: str, tmp_path: Path
) -> None:
    values = {"port": _closed_port(), "file": tmp_path / "a-file", "unusable_db": tmp_path / "up"}
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "up" / "corral.db").mkdir(parents=True)  # where up's SQLite file would be
    argv = [a.format(**values) for a in args]
    result = corral(*argv, "--port", "0", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == ExitCode.USAGE, output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("corral: error: ")]
    assert len(errors) == 1 and mentions.format(**values) in errors[0], output
