"""The CLI against a real coordinator on a loopback port (no workers), and as a process of
its own: what each command prints for scripts and people, and how refusals end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from harness import Coordinator, start_coordinator
from typer.testing import CliRunner
from wire import next_event, register_worker

from corral.cli._exit import ExitCode
from corral.cli._logging import Level, configure
from corral.cli.main import app

runner = CliRunner()


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    # The coordinator shares this process: keep its logs out of the output under test.
    configure(Level.ERROR, stream=sys.__stderr__)
    # The CLI does not care which store is behind the API; SQLite keeps this fast.
    c, stop = start_coordinator(tmp_path / "server", f"sqlite:///{tmp_path / 'c.db'}")
    try:
        yield c
    finally:
        stop()
        structlog.reset_defaults()


def cli(coord: Coordinator, *args: str, key: str | None = None) -> Any:
    env = {"CORRAL_URL": coord.url, "CORRAL_API_KEY": key or coord.admin_key}
    return runner.invoke(app, list(args), env=env)


def doc(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_submit_ls_show_cancel_print_one_json_document(coord: Coordinator) -> None:
    job = doc(cli(coord, "submit", "--json", "--name", "hi", "-l", "gpu=a*", "-e", "A=1",
                  "--priority", "5", "--retries", "0", "--timeout", "30",
                  "python", "-c", "print('hi')"))  # fmt: skip
    assert job["state"] == "queued" and job["id"].startswith("job_")
    assert job["command"] == ["python", "-c", "print('hi')"]
    assert job["worker_labels"] == {"gpu": "a*"} and job["priority"] == 5
    assert job["max_retries"] == 0 and job["timeout_s"] == 30

    listing = doc(cli(coord, "jobs", "ls", "--json", "--state", "queued"))
    assert [j["id"] for j in listing["jobs"]] == [job["id"]]
    assert doc(cli(coord, "jobs", "show", "--json", job["id"]))["name"] == "hi"

    cancelled = cli(coord, "jobs", "cancel", job["id"])
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout
    assert doc(cli(coord, "jobs", "show", "--json", job["id"]))["state"] == "cancelled"
    human = cli(coord, "jobs", "ls")
    assert human.exit_code == 0 and job["id"] in human.stdout


def _play_worker(coord: Coordinator, outcome: str) -> threading.Thread:
    """A hand-played worker that runs the next job it is given and ends it with ``outcome``."""
    _, wc = register_worker(coord)

    def play() -> None:
        ev = next_event(wc)
        jid, attempt = ev["data"]["job_id"], ev["data"]["attempt"]
        wc.post(f"/api/workers/job/{jid}/status", json={"attempt": attempt, "status": "running"})
        out = 'epoch 1\ncorral.metric {"step":1,"loss":0.5}\npartial'
        wc.post(f"/api/workers/job/{jid}/logs", json={"attempt": attempt, "seq": 0, "data": out})
        if outcome == "cancelled":
            with coord.client() as c:
                c.post(f"/api/jobs/{jid}/cancel")
        report = {
            "attempt": attempt,
            "status": outcome,
            "exit_code": 0 if outcome == "succeeded" else 1,
        }
        wc.post(f"/api/workers/job/{jid}/status", json=report)
        wc.close()

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("succeeded", ExitCode.OK),
        ("failed", ExitCode.JOB_FAILED),
        ("cancelled", ExitCode.JOB_CANCELLED),
    ],
)
def test_submit_wait_streams_output_and_exits_with_the_outcome(
    coord: Coordinator, outcome: str, code: int
) -> None:
    worker = _play_worker(coord, outcome)
    result = cli(coord, "submit", "--wait", "--", "python", "-c", "pass")
    worker.join(10)
    assert result.exit_code == code, result.output
    assert result.stdout == 'epoch 1\ncorral.metric {"step":1,"loss":0.5}\npartial\n'
    assert outcome in result.stderr


def test_submit_wait_json_prints_only_the_final_job(coord: Coordinator) -> None:
    worker = _play_worker(coord, "failed")
    result = cli(coord, "submit", "--wait", "--json", "false")
    worker.join(10)
    assert result.exit_code == ExitCode.JOB_FAILED
    final = json.loads(result.stdout)
    assert final["state"] == "failed" and final["exit_code"] == 1


def test_workers_create_ls_drain_rotate_rm(coord: Coordinator) -> None:
    created = doc(cli(coord, "workers", "create", "--json", "box-1", "--persistent",
                      "--labels", "gpu=a100,zone=eu", "--allow-label", "rack",
                      "--allow-label", "row-*"))  # fmt: skip
    assert created["id"] and created["token"] and created["name"] == "box-1"
    workers = doc(cli(coord, "workers", "ls", "--json"))["workers"]
    assert [(w["name"], w["worker_type"], w["labels"], w["allowed_labels"]) for w in workers] == [
        ("box-1", "persistent", {"gpu": "a100", "zone": "eu"}, ["rack", "row-*"])
    ]
    rotated = doc(cli(coord, "workers", "rotate-token", "--json", "box-1"))
    assert rotated["token"] != created["token"]
    drained = cli(coord, "workers", "drain", created["id"])
    assert drained.exit_code == 0, drained.output
    assert "until its process is stopped" in drained.stderr  # persistent: it does not leave
    removed = cli(coord, "workers", "rm", "box-1")
    assert removed.exit_code == 0, removed.output
    assert doc(cli(coord, "workers", "ls", "--json"))["workers"] == []


def one_line(result: Any, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("corral: error: "), result.stderr
    return lines[0]


def test_refusals_are_one_line_and_exit_2(coord: Coordinator) -> None:
    assert "not_found" in one_line(cli(coord, "jobs", "show", "job_nope"), ExitCode.USAGE)
    assert "box-9" in one_line(cli(coord, "workers", "rm", "box-9"), ExitCode.USAGE)
    line = one_line(cli(coord, "jobs", "ls", key="ck_wrong"), ExitCode.USAGE)
    assert "CORRAL_API_KEY" in line


def test_workers_create_says_to_pass_the_token_in_the_environment(coord: Coordinator) -> None:
    # A command line is visible to every user of the host; the environment is not.
    result = cli(coord, "workers", "create", "box-2", "--persistent")
    assert result.exit_code == 0, result.output
    token = result.stdout.split("token (shown once): ")[1].split()[0]
    assert "--worker-token" not in result.output
    hint = result.stderr.replace("\n", " ")
    assert f"CORRAL_WORKER__TOKEN={token} corral worker --orchestrator-url {coord.url}" in hint
    assert "--name box-2 --persistent" in hint


@pytest.mark.parametrize("name", ["[/]", "\x1b[31mred", "two\nlines", "[bold]x[/bold]"])
def test_supplied_names_are_shown_as_text_never_raw(coord: Coordinator, name: str) -> None:
    # A Rich markup tag in a name used to crash the tables with a traceback; an escape or a
    # newline went to the terminal as it was.
    escaped = name.encode("unicode_escape").decode()
    job = doc(cli(coord, "submit", "--json", "--name", name, "--", "echo", name))
    assert job["name"] == name
    worker = doc(cli(coord, "workers", "create", "--json", name, "--labels", f"tag={name}"))
    outputs = {}
    for args in (
        ("submit", "--name", name, "--", "echo", name),
        ("jobs", "ls"),
        ("jobs", "show", job["id"]),
        ("workers", "ls"),
        ("workers", "rotate-token", name),
        ("jobs", "cancel", job["id"]),
        ("workers", "rm", worker["id"]),  # refused (not offline): the error names it
    ):
        result = cli(coord, *args)
        output = outputs[args[:2]] = result.stdout + result.stderr
        assert result.exit_code in (0, ExitCode.USAGE), output
        assert "Traceback" not in output, output
        assert "\x1b" not in output and "two\nlines" not in output, output
    for shown_in in (("jobs", "ls"), ("jobs", "show"), ("workers", "ls"), ("submit", "--name")):
        assert escaped in outputs[shown_in], outputs[shown_in]
    assert f"echo {escaped}" in outputs[("jobs", "show")]


def test_a_refused_submit_names_the_flag(coord: Coordinator) -> None:
    line = one_line(cli(coord, "submit", "--retries", "500", "true"), ExitCode.USAGE)
    assert "--retries" in line


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


def test_show_says_what_a_call_job_runs(coord: Coordinator) -> None:
    with coord.client() as c:
        r = c.post("/api/queue/submit", json={"kind": "call", "call": {
            "target": "statistics:mean", "args": [[1, 2, 3]]}})  # fmt: skip
        assert r.status_code == 201, r.text
    shown = cli(coord, "jobs", "show", r.json()["id"])
    assert shown.exit_code == 0, shown.output
    assert "statistics:mean with 1 argument" in shown.stdout


def test_submit_with_requirements_then_why_says_what_no_worker_has(coord: Coordinator) -> None:
    job = doc(cli(coord, "submit", "--json", "--gpus", "2", "--gpu-name", "*A100*", "--cpus",
                  "4", "--memory-gb", "8", "--tags", "cuda,bert", "--", "true"))  # fmt: skip
    assert (job["gpus"], job["gpu_name"], job["cpus"], job["memory_gb"], job["tags"]) == (
        2, "*A100*", 4, 8, ["cuda", "bert"],
    )  # fmt: skip
    shown = cli(coord, "jobs", "show", job["id"])
    assert "2 GPUs (*A100*), 4 cpus, 8 GB memory, tags cuda,bert" in shown.stdout, shown.output
    said = cli(coord, "jobs", "why", job["id"])
    assert said.exit_code == 0 and "no worker is registered for this tenant" in said.stdout
    assert doc(cli(coord, "jobs", "why", "--json", job["id"]))["state"] == "queued"
    # What cannot be asked is refused naming the flag, with exit code 2.
    for flags, named in ((["--gpu-name", "*A100*"], "--gpu-name"),
                         (["--accelerator", "tpu"], "--accelerator"),
                         (["--cpus", "-1"], "--cpus")):  # fmt: skip
        assert named in one_line(cli(coord, "submit", *flags, "--", "true"), ExitCode.USAGE)


def test_workers_pause_and_resume(coord: Coordinator) -> None:
    doc(cli(coord, "workers", "create", "p1", "--persistent", "--json"))
    said = cli(coord, "workers", "pause", "p1")
    assert said.exit_code == 0 and "p1" in said.stdout and "paused" in said.stdout
    listed = doc(cli(coord, "workers", "ls", "--json"))["workers"]
    assert [w["paused"] for w in listed] == [True]
    assert "resumed" in cli(coord, "workers", "resume", "p1").stdout
    assert [w["paused"] for w in doc(cli(coord, "workers", "ls", "--json"))["workers"]] == [False]


def test_a_gang_is_submitted_shown_and_its_ranks_named(coord: Coordinator) -> None:
    job = doc(cli(coord, "submit", "--json", "--nodes", "2", "--", "true"))
    assert (job["nodes"], job["rank"], job["gang_id"]) == (2, 0, job["id"])
    shown = cli(coord, "jobs", "show", job["id"])
    assert f"rank 0 of 2: {job['id']} {job['id']}.1" in shown.stdout, shown.output
    assert cli(coord, "jobs", "logs", job["id"], "--rank", "1").exit_code == 0
    assert "--rank" in one_line(
        cli(coord, "jobs", "logs", job["id"], "--rank", "5"), ExitCode.USAGE
    )
    said = cli(coord, "jobs", "why", job["id"])
    assert "no worker is registered" in said.stdout
    assert "--nodes" in one_line(cli(coord, "submit", "--nodes", "0", "--", "true"), ExitCode.USAGE)
