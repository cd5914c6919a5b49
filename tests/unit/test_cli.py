"""The CLI without a coordinator: parsing, one-line errors, exit codes, what it prints."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from corral.cli import _output, _parse, _timeline
from corral.cli._api import explain
from corral.cli._exit import ExitCode
from corral.cli._follow import parse_metric
from corral.cli.main import app
from corral.cli.up import _admin_key
from corral.client import InvalidInput, NotFound, Unreachable
from corral.local import BadSetting, FleetError
from corral.protocol import EventView
from corral.protocol.errors import from_problem

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


def test_drain_help_says_a_persistent_worker_stays_until_stopped() -> None:
    # It stays connected, taking nothing, so that a process manager does not restart it in a
    # loop; only an offline worker can be removed.
    text = " ".join(invoke("workers", "drain", "--help").stdout.split())
    assert "ephemeral worker then exits" in text
    assert "persistent one stays connected, draining, until its process is stopped" in text
    assert "then leave" not in text


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
    failure = explain(from_problem(422, problem))
    assert failure.exit_code == ExitCode.USAGE
    assert "body.priority: must be <= 1000" in failure.format_message()
    assert "invalid_input" in failure.format_message()

    auth = explain(from_problem(401, {"detail": "invalid API key", "code": "unauthenticated"}))
    assert auth.exit_code == ExitCode.USAGE and "CORRAL_API_KEY" in auth.format_message()

    broken = explain(from_problem(500, {"detail": "boom", "code": "internal"}))
    assert broken.exit_code == ExitCode.SERVER_ERROR
    assert explain(from_problem(503, {"detail": "db", "code": "x"})).exit_code == 5

    gone = explain(Unreachable("no coordinator answered (http://c:1)"))
    assert gone.exit_code == ExitCode.UNREACHABLE and "http://c:1" in gone.format_message()

    # The client's own refusals, before any request: exit 2, without a server's code.
    missing = explain(NotFound("no worker with id or name 'w'"))
    assert missing.exit_code == ExitCode.USAGE and "[" not in missing.format_message()
    url = explain(InvalidInput("bad coordinator URL 'x'", field="url"))
    assert "CORRAL_URL" in url.format_message()

    # A local fleet: a setting that cannot be used is bad input, a dead process is 1.
    assert explain(BadSetting("cannot open the database")).exit_code == ExitCode.USAGE
    assert explain(FleetError("worker local-1 exited")).exit_code == ExitCode.JOB_FAILED


def test_an_error_with_control_characters_is_escaped() -> None:
    failure = explain(from_problem(404, {"detail": "no job \x1b[31mred\nx", "code": "not_found"}))
    assert "\x1b" not in failure.format_message() and "\n" not in failure.format_message()
    assert "\\x1b[31mred\\nx" in failure.format_message()


def _render(renderable: Any) -> str:
    buf = io.StringIO()
    Console(file=buf, width=200, color_system=None).print(renderable)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "shown_as"),
    [
        ("[/]", "[/]"),
        ("[bold]x[/bold]", "[bold]x[/bold]"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("two\nlines", "two\\nlines"),
        ("tab\there\r", "tab\\there\\r"),
        ("rtl\u202eevil", "rtl\\u202eevil"),
        ("c1\x9bz", "c1\\x9bz"),
    ],
)
def test_supplied_text_is_shown_as_text_with_controls_escaped(name: str, shown_as: str) -> None:
    # Rich would read "[/]" as markup (and raise), and pass an escape or a newline through.
    assert _output.shown(name) == shown_as
    for renderable in (
        _output.table(None, ("NAME", "STATE"), [(name, _output.state("queued"))]),
        _output.line("job ", name, " ", _output.state(name)),
    ):
        text = _render(renderable)
        assert shown_as in text
        assert not any(c in text for c in "\x1b\r\x9b\u202e")
        assert "two\nlines" not in text


def test_a_block_of_text_keeps_its_line_breaks_only() -> None:
    assert _output.shown("a\n\x1bb", newlines=True) == "a\n\\x1bb"


def _event(kind: str, **fields: Any) -> EventView:
    return EventView(id=1, at=datetime.now(UTC), kind=kind, cause="tick_1", **fields)


def test_timeline_says_what_happened_and_why() -> None:
    lost = _event(
        "job.requeued",
        attempt=1,
        reason="heartbeat_timeout",
        message="no heartbeat for 120s",
        detail={"outcome": "lost", "backoff_s": 2.0},
    )
    assert _timeline.summary(lost, {}) == (
        "attempt 1 lost: no heartbeat for 120s — requeued, retry in 2s"
    )
    assigned = _event("job.assigned", attempt=2, worker_id="w_1")
    assert _timeline.summary(assigned, {"w_1": "box"}) == "attempt 2 assigned to box"
    failed = _event(
        "job.failed", attempt=1, message="boom", detail={"outcome": "failed", "exit_code": 3}
    )
    assert _timeline.summary(failed, {}) == "attempt 1 failed: boom (exit code 3)"
    running = _event("job.running", attempt=2, worker_id="w_1")
    assert _timeline.summary(running, {}) == "attempt 2 running on w_1"
    registered = _event("worker.registered", worker_id="w_1", detail={
        "address": "10.0.0.7", "hostname": "gpu-1", "cpu_count": 8, "gpus": ["A100"],
        "slots": 2, "labels": {"zone": "eu"},
    })  # fmt: skip
    assert _timeline.summary(registered, {}) == (
        "registered from 10.0.0.7, host gpu-1, 8 CPUs, GPUs A100, 2 slots, zone=eu"
    )
    offline = _event("worker.offline", reason="stream_dropped", message="its stream dropped")
    assert _timeline.summary(offline, {}) == "offline: its stream dropped"
    assert _timeline.summary(_event("worker.token_rotated"), {}) == "token rotated"
    text = _render(_timeline.table([lost, assigned], {"w_1": "box"}))
    assert "tick_1" in text and "retry in 2s" in text and "assigned to box" in text


def test_parse_metric_reads_sdk_lines_only() -> None:
    assert parse_metric('corral.metric {"step":3,"loss":0.5}\n') == {"step": 3, "loss": 0.5}
    assert parse_metric("corral.metric not json\n") is None
    assert parse_metric("corral.metric [1]\n") is None
    assert parse_metric("epoch 3 loss 0.5\n") is None


def test_up_keeps_its_admin_key_private_and_stable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORRAL_BOOTSTRAP_ADMIN_KEY", raising=False)
    monkeypatch.delenv("CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY", raising=False)
    key = _admin_key(tmp_path)
    assert key.startswith("ck_") and len(key) > 30
    assert _admin_key(tmp_path) == key
    assert os.stat(tmp_path / "admin.key").st_mode & 0o077 == 0
    from_env = "ck_from_env_0123456789abcdef0123456789"
    old_name = "ck_old_name_0123456789abcdef0123456789"
    monkeypatch.setenv("CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY", from_env)
    assert _admin_key(tmp_path) == from_env
    monkeypatch.delenv("CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY")
    monkeypatch.setenv("CORRAL_BOOTSTRAP_ADMIN_KEY", old_name)  # still read, deprecated
    assert _admin_key(tmp_path) == old_name


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
