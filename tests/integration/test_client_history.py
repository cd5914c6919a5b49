"""A job's and a worker's history through corral.client and the CLI: the timeline, and
``wait`` that follows it to the job's end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from faultproxy import FaultProxy
from harness import Coordinator, start_coordinator
from typer.testing import CliRunner
from wire import next_event, register_worker

from corral.cli._logging import Level, configure
from corral.cli.main import app
from corral.client import AsyncClient, Client, NotFound

runner = CliRunner()


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    configure(Level.ERROR, stream=sys.__stderr__)
    c, stop = start_coordinator(tmp_path / "server", f"sqlite:///{tmp_path / 'c.db'}")
    try:
        yield c
    finally:
        stop()
        structlog.reset_defaults()


def _run(wc: Any, job_id: str, outcome: str = "succeeded") -> None:
    """The hand-played worker runs the attempt it was sent and ends it with ``outcome``."""
    ev = next_event(wc)
    assert ev["data"]["job_id"] == job_id
    path = f"/api/workers/job/{job_id}/status"
    assert wc.post(path, json={"attempt": 1, "status": "running"}).status_code == 200
    report = {"attempt": 1, "status": outcome, "exit_code": 0 if outcome == "succeeded" else 1}
    if outcome == "succeeded":
        report["result"] = {"accuracy": 0.9}
    assert wc.post(path, json=report).status_code == 200


async def test_wait_follows_the_history_to_the_end(coord: Coordinator) -> None:
    created, wc = register_worker(coord)
    async with AsyncClient(coord.url, coord.admin_key) as client:
        job = await client.submit(["train"], name="sweep-0")
        with pytest.raises(TimeoutError):  # no worker has taken it yet: still queued
            await client.wait(job.id, timeout=0.5)
        waiting = asyncio.create_task(client.wait(job.id, timeout=30))
        await asyncio.to_thread(_run, wc, job.id)
        final = await waiting
        assert final.state == "succeeded" and final.result == {"accuracy": 0.9}
        assert [a.outcome for a in final.attempts or []] == ["succeeded"]
        assert (await client.wait(job.id)).id == job.id  # an ended job: at once

        timeline = [e async for e in client.events(job.id)]
        assert [e.kind for e in timeline] == [
            "job.submitted", "job.assigned", "job.running", "job.succeeded",
        ]  # fmt: skip
        assert all(e.cause for e in timeline)
        assert timeline[1].worker_id == created["id"] and timeline[1].attempt == 1
        assert [e.id for e in timeline] == sorted(e.id for e in timeline)
        with pytest.raises(NotFound):
            [e async for e in client.events("job_nope")]
        with pytest.raises(NotFound):
            await client.wait("job_nope", timeout=10)


async def test_wait_rides_out_a_cut_link(coord: Coordinator) -> None:
    _, wc = register_worker(coord)
    proxy = FaultProxy("127.0.0.1", int(coord.url.rsplit(":", 1)[1])).start()
    try:
        async with AsyncClient(proxy.url, coord.admin_key) as client:
            job = await client.submit(["train"])
            waiting = asyncio.create_task(client.wait(job.id, timeout=30))
            await asyncio.sleep(0.3)  # its stream is open
            proxy.cut()
            await asyncio.to_thread(_run, wc, job.id, "failed")
            proxy.restore()
            assert (await waiting).state == "failed"
    finally:
        proxy.stop()


def test_a_sweep_waited_on_from_the_blocking_client(coord: Coordinator) -> None:
    _, wc = register_worker(coord, slots=3)
    with Client(coord.url, coord.admin_key) as client:
        jobs = [client.submit(["train", f"--lr={lr}"]) for lr in (0.1, 0.01, 0.001)]
        last = None
        for _ in jobs:
            ev = next_event(wc, last)
            last = ev["id"]
            jid = ev["data"]["job_id"]
            done = {"attempt": 1, "status": "succeeded", "exit_code": 0, "result": {"id": jid}}
            wc.post(f"/api/workers/job/{jid}/status", json=done)
        results = [client.wait(j.id, timeout=30).result for j in jobs]
    assert results == [{"id": j.id} for j in jobs]


def test_a_workers_history_by_name(coord: Coordinator) -> None:
    created, wc = register_worker(coord, name="box-1")
    with contextlib.suppress(httpx.ReadTimeout):  # its stream opens: it is connected
        next_event(wc, timeout=1.0)
    with Client(coord.url, coord.admin_key) as client:
        client.drain_worker("box-1")
        kinds = [e.kind for e in client.worker_events("box-1")]
        registered = next(e for e in client.worker_events(created["id"]) if
                          e.kind == "worker.registered")  # fmt: skip
    assert kinds[:2] == ["worker.created", "worker.registered"]
    assert "worker.draining" in kinds
    assert "address" in registered.detail and registered.detail["slots"] == 1


def cli(coord: Coordinator, *args: str) -> Any:
    env = {"CORRAL_URL": coord.url, "CORRAL_API_KEY": coord.admin_key}
    return runner.invoke(app, list(args), env=env)


def test_cli_timelines_for_people_and_for_scripts(coord: Coordinator) -> None:
    created, wc = register_worker(coord, name="[/]box")
    with Client(coord.url, coord.admin_key) as client:
        job = client.submit(["train"], name="\x1b[31mred")
        _run(wc, job.id)
        client.wait(job.id, timeout=30)

    as_json = cli(coord, "jobs", "events", job.id, "--json")
    assert as_json.exit_code == 0, as_json.output
    events = json.loads(as_json.stdout)["events"]  # exactly one JSON document
    assert [e["kind"] for e in events] == [
        "job.submitted", "job.assigned", "job.running", "job.succeeded",
    ]  # fmt: skip
    human = cli(coord, "jobs", "events", job.id)
    assert human.exit_code == 0, human.output
    for e in events:
        assert e["kind"] in human.stdout and e["cause"] in human.stdout
    assert "[/]box" in human.stdout  # the worker's name, as text
    assert "\x1b" not in human.stdout

    worker = cli(coord, "workers", "events", "[/]box", "--json")
    assert worker.exit_code == 0, worker.output
    kinds = [e["kind"] for e in json.loads(worker.stdout)["events"]]
    assert kinds[:2] == ["worker.created", "worker.registered"]
    people = cli(coord, "workers", "events", created["id"])
    assert people.exit_code == 0 and "registered from" in people.stdout, people.output
    missing = cli(coord, "workers", "events", "nobody")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
