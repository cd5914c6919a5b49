"""The worker agent against a small scripted coordinator on a loopback port.

The fake speaks the worker protocol exactly (paths, token header, SSE with ids and
Last-Event-ID, 409 stale_attempt) and records what the worker sent; real jobs run as real
child processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from corral.protocol import AttemptReport, GpuInfo
from corral.protocol.transport import Transport
from corral.worker import _procs
from corral.worker.agent import Agent
from corral.worker.client import WorkerClient
from corral.worker.config import WorkerSettings
from corral.worker.hardware import Hardware
from corral.worker.journal import AttemptRecord, Journal
from corral.worker.process import launch_argv
from corral.worker.workdir import attempt_dir, prepare_workdir

TOKEN = "wt_the_one_secret"
PY = sys.executable
Key = tuple[str, int]


class FakeCoordinator:
    def __init__(self) -> None:
        self.token = TOKEN
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.registers: list[dict[str, Any]] = []
        self.last_event_ids: list[str | None] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.reports: list[tuple[str, dict[str, Any]]] = []
        self.logs: dict[Key, dict[int, str]] = {}
        self.disconnects = 0
        self.keep: set[Key] = set()  # register answers keep for these, stop for the rest
        self.stale: set[Key] = set()  # status and logs answer 409 stale_attempt
        self.heartbeat_stop: set[Key] = set()
        self.heartbeat_stops_sent: list[dict[str, Any]] = []  # what heartbeats answered stop
        self.reports_down = False  # the status route answers 503
        self.refused_reports: list[dict[str, Any]] = []
        self.calls: list[str] = []  # route names in the order they were called
        self._wake = asyncio.Event()
        self._generation = 0  # bumped to end every open stream
        routes = [
            Route("/api/workers/register", self.register, methods=["POST"]),
            Route("/api/workers/stream", self.stream, methods=["GET"]),
            Route("/api/workers/heartbeat", self.heartbeat, methods=["POST"]),
            Route("/api/workers/job/{job_id}/status", self.status, methods=["POST"]),
            Route("/api/workers/job/{job_id}/logs", self.log_batch, methods=["POST"]),
            Route("/api/workers/disconnect", self.disconnect, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    # ---- scripting --------------------------------------------------------------------

    def push(self, data: dict[str, Any]) -> int:
        event_id = len(self.events) + 1
        self.events.append((event_id, data))
        self._wake.set()
        return event_id

    def assign(self, job_id: str, code: str, *, attempt: int = 1, **kw: Any) -> int:
        command = [PY, "-c", code]
        return self.push({"type": "job.assign", "job_id": job_id, "attempt": attempt,
                          "name": job_id, "command": command, **kw})  # fmt: skip

    def drop_streams(self) -> None:
        self._generation += 1
        self._wake.set()

    def finals(self, job_id: str | None = None) -> list[dict[str, Any]]:
        return [r for j, r in self.reports
                if r["status"] != "running" and (job_id is None or j == job_id)]  # fmt: skip

    def output(self, key: Key) -> str:
        batches = self.logs.get(key, {})
        return "".join(batches[s] for s in sorted(batches))

    # ---- routes -----------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        self.calls.append(request.url.path.rsplit("/", 1)[-1])
        if request.headers.get("X-Worker-Token") != self.token:
            return JSONResponse({"code": "unauthenticated", "detail": "bad token"}, 401)
        return None

    async def register(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.registers.append(body)
        running = [(r["job_id"], r["attempt"]) for r in body["running"]]
        refs = lambda keys: [{"job_id": j, "attempt": a} for j, a in keys]  # noqa: E731
        return JSONResponse({
            "worker_id": "w_1", "name": body["name"], "heartbeat_interval_s": 0.2,
            "keep": refs(k for k in running if k in self.keep),
            "stop": refs(k for k in running if k not in self.keep),
        })  # fmt: skip

    async def stream(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        last = request.headers.get("Last-Event-ID")
        self.last_event_ids.append(last)
        generation = self._generation

        async def body() -> AsyncIterator[bytes]:
            after = int(last or 0)
            while generation == self._generation:
                for event_id, data in self.events:
                    if event_id > after:
                        after = event_id
                        yield (f"event: {data['type']}\nid: {event_id}\n"
                               f"data: {json.dumps(data)}\n\n").encode()  # fmt: skip
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.2)
                except TimeoutError:
                    yield b": ping\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def heartbeat(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.heartbeats.append(body)
        stop = [r for r in body["running"] if (r["job_id"], r["attempt"]) in self.heartbeat_stop]
        self.heartbeat_stops_sent.extend(stop)
        return JSONResponse({"status": "busy" if body["running"] else "idle", "stop": stop})

    async def status(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        job_id, body = request.path_params["job_id"], await request.json()
        if self.reports_down:
            self.refused_reports.append(body)
            return JSONResponse({"code": "unavailable", "detail": "down"}, 503)
        if (job_id, body["attempt"]) in self.stale:
            return JSONResponse({"code": "stale_attempt", "detail": "not current"}, 409)
        self.reports.append((job_id, body))
        state = "running" if body["status"] == "running" else body["status"]
        return JSONResponse({"job_id": job_id, "state": state.replace("timed_out", "queued")})

    async def log_batch(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        job_id, body = request.path_params["job_id"], await request.json()
        if (job_id, body["attempt"]) in self.stale:
            return JSONResponse({"code": "stale_attempt", "detail": "not current"}, 409)
        self.logs.setdefault((job_id, body["attempt"]), {}).setdefault(body["seq"], body["data"])
        return Response(status_code=204)

    async def disconnect(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        self.disconnects += 1
        return Response(status_code=204)


@pytest.fixture
async def coordinator() -> AsyncIterator[tuple[FakeCoordinator, str]]:
    fake = FakeCoordinator()
    config = uvicorn.Config(fake.app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off", timeout_graceful_shutdown=1)  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield fake, f"http://127.0.0.1:{port}"
    fake.drop_streams()
    server.should_exit = True
    await asyncio.wait_for(serving, 10)


def make_agent(url: str, tmp_path: Path, *, token: str = TOKEN, gpus: int = 0, **kw: Any) -> Agent:
    settings = WorkerSettings(orchestrator_url=url, worker_token=token, name="w-test",
                              data_dir=tmp_path / "data", kill_grace_s=0.5,
                              heartbeat_interval_s=0.2, labels={"zone": "test"},
                              **{"metrics_port": 0, **kw})  # fmt: skip
    transport = Transport(url, headers={"X-Worker-Token": token}, timeout_s=5,
                          attempts=2, retry_timeout_s=1)  # fmt: skip
    machine = Hardware(
        "host",
        4,
        8 << 30,
        [GpuInfo(index=i, name="Fake", memory_bytes=1 << 30) for i in range(gpus)],
    )
    return Agent(settings, client=WorkerClient(transport), machine=machine, log_interval_s=0.05)


async def until(check: Callable[[], object], within_s: float = 10.0) -> None:
    """Poll with a deadline: the condition, or a failure that says it did not come."""
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


LONG = "import os, time; open('pid', 'w').write(str(os.getpid())); print('up', flush=True); time.sleep(60)"  # noqa: E501


async def test_ephemeral_runs_one_job_then_leaves(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    code = ("from corral import sdk\nprint('hello from the job')\nsdk.report(step=1, loss=0.5)\n"
            "sdk.set_result({'accuracy': 0.9})")  # fmt: skip
    fake.assign("j_1", code)
    fake.assign("j_2", code)  # an ephemeral worker runs one job only
    with structlog.testing.capture_logs() as logs:
        code_ = await asyncio.wait_for(make_agent(url, tmp_path).run(), 20)
    assert code_ == 0
    [reg] = fake.registers
    assert reg["labels"] == {"zone": "test"} and reg["slots"] == 1 and reg["persistent"] is False
    assert [r["status"] for j, r in fake.reports] == ["running", "succeeded"]
    [final] = fake.finals()
    assert final["result"] == {"accuracy": 0.9} and final["exit_code"] == 0
    out = fake.output(("j_1", 1))
    assert "hello from the job" in out and 'corral.metric {"step":1,"loss":0.5}' in out
    assert fake.disconnects == 1
    assert TOKEN not in repr(logs)


async def test_refused_token_exits_2(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    assert await asyncio.wait_for(make_agent(url, tmp_path, token="wt_wrong").run(), 10) == 2
    assert fake.registers == [] and fake.disconnects == 0


async def test_cancel_stops_the_job_and_reports_cancelled(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    agent = make_agent(url, tmp_path, persistent=True)
    running = asyncio.create_task(agent.run())
    fake.assign("j_1", LONG)
    await until(lambda: "up" in fake.output(("j_1", 1)))
    fake.push({"type": "job.cancel", "job_id": "j_1", "attempt": 1})
    await until(lambda: fake.finals("j_1"))
    assert fake.finals("j_1")[0]["status"] == "cancelled"
    pid = int((attempt_dir(tmp_path / "data", "j_1", 1) / "pid").read_text())
    assert gone(pid)
    fake.assign("j_2", "print('next')")  # persistent: takes the next job
    await until(lambda: fake.finals("j_2"))
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


async def test_stale_attempt_is_killed_and_not_reported(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    agent = make_agent(url, tmp_path, persistent=True)
    running = asyncio.create_task(agent.run())
    fake.assign("j_1", LONG)
    await until(lambda: "up" in fake.output(("j_1", 1)))
    fake.stale.add(("j_1", 1))
    pid = int((attempt_dir(tmp_path / "data", "j_1", 1) / "pid").read_text())
    # The next log batch (the job prints nothing more, so make it) meets the 409.
    with (attempt_dir(tmp_path / "data", "j_1", 1) / ".corral" / "output.log").open("a") as fh:
        fh.write("more\n")
    await until(lambda: gone(pid))
    await until(lambda: not agent.running)
    assert fake.finals() == []
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


async def test_heartbeat_stop_kills_the_attempt(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    agent = make_agent(url, tmp_path, persistent=True)
    running = asyncio.create_task(agent.run())
    fake.assign("j_1", LONG)
    await until(lambda: "up" in fake.output(("j_1", 1)))
    fake.heartbeat_stop.add(("j_1", 1))
    await until(lambda: not agent.running)
    # What stopped it: a heartbeat that listed it, answered with stop (a later heartbeat
    # lists nothing, so not "the last one").
    assert {"job_id": "j_1", "attempt": 1} in fake.heartbeat_stops_sent
    assert fake.finals() == []
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


async def test_reconnects_with_last_event_id(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    agent = make_agent(url, tmp_path, persistent=True)
    running = asyncio.create_task(agent.run())
    first = fake.assign("j_1", "print('one')")
    await until(lambda: fake.finals("j_1"))
    fake.drop_streams()
    await until(lambda: len(fake.last_event_ids) >= 2)
    assert fake.last_event_ids[0] is None and fake.last_event_ids[-1] == str(first)
    assert len(fake.registers) >= 2  # registers again before it streams again
    fake.assign("j_2", "print('two')")
    await until(lambda: fake.finals("j_2"))
    assert [j for j, r in fake.reports if r["status"] == "succeeded"] == ["j_1", "j_2"]
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


async def test_stop_kills_running_jobs_and_disconnects(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    agent = make_agent(url, tmp_path)
    running = asyncio.create_task(agent.run())
    fake.assign("j_1", LONG)
    await until(lambda: "up" in fake.output(("j_1", 1)))
    pid = int((attempt_dir(tmp_path / "data", "j_1", 1) / "pid").read_text())
    agent._on_signal(signal.SIGTERM)
    assert await asyncio.wait_for(running, 10) == 0
    assert gone(pid)
    # Not "cancelled": the job is lost with this worker and retried elsewhere.
    assert fake.finals() == [] and fake.disconnects == 1
    journal = Journal(tmp_path / "data")
    assert journal.attempts() == [] and journal.pending_count() == 0
    journal.close()


async def test_result_waits_for_the_coordinator(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    fake.reports_down = True
    fake.assign("j_1", "from corral import sdk; sdk.set_result({'n': 1})")
    running = asyncio.create_task(make_agent(url, tmp_path).run())
    final_tries = lambda: [r for r in fake.refused_reports if r["status"] == "succeeded"]  # noqa: E731
    await until(lambda: len(final_tries()) >= 3)  # the transport's retry, then the outbox's
    assert not running.done()  # an ephemeral worker leaves only once its result is taken
    journal_rows = await asyncio.to_thread(_pending_in_journal, tmp_path / "data")
    assert journal_rows == 1
    fake.reports_down = False
    assert await asyncio.wait_for(running, 20) == 0
    assert fake.finals("j_1")[0]["result"] == {"n": 1}


def _pending_in_journal(data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "journal.sqlite3") as db:  # the worker holds the lock
        return int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])


async def test_drain(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    fake.push({"type": "worker.drain"})
    assert await asyncio.wait_for(make_agent(url, tmp_path).run(), 10) == 0  # ephemeral: leaves

    disconnects = fake.disconnects
    with structlog.testing.capture_logs() as logs:
        agent = make_agent(url, tmp_path, persistent=True)
        running = asyncio.create_task(agent.run())
        fake.assign("j_1", "print('no')")
        # It has the assign (after the drain, on the same stream) and turned it down.
        declined = {"event": "assign.declined", "reason": "draining", "job_id": "j_1"}
        await until(lambda: any(declined.items() <= e.items() for e in logs))
    # Persistent: it stays. Two more heartbeats, so the second was sent after the decline.
    beats = len(fake.heartbeats)
    await until(lambda: len(fake.heartbeats) >= beats + 2)
    assert not running.done() and fake.disconnects == disconnects
    assert fake.reports == [] and not agent.running  # it took nothing
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


async def test_gpus_are_disjoint(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    agent = make_agent(url, tmp_path, gpus=2, max_concurrent_tasks=3, persistent=True)
    running = asyncio.create_task(agent.run())
    code = (
        "import os, time; from corral import sdk\n"
        "sdk.set_result({'cvd': os.environ.get('CUDA_VISIBLE_DEVICES')}); time.sleep(0.5)"
    )
    fake.assign("j_1", code, gpus=1)
    fake.assign("j_2", code, gpus=1)
    fake.assign("j_3", code, gpus=0)
    await until(lambda: len(fake.finals()) == 3)
    seen = {j: r["result"]["cvd"] for j, r in fake.reports if r["status"] == "succeeded"}
    assert sorted([seen["j_1"], seen["j_2"]]) == ["0", "1"] and seen["j_3"] == ""
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


def _leave_running(
    data_dir: Path, job_id: str, code: str, *, shim: bool = True
) -> subprocess.Popen[bytes]:
    """What a worker killed with -9 leaves behind: a live job and its journal row.
    ``shim=False``: started as a worker that did not record exit codes would have."""
    workdir = attempt_dir(data_dir, job_id, 1)
    prepare_workdir(workdir)
    out = (workdir / ".corral" / "output.log").open("ab")
    argv = [PY, "-c", code]
    env = {**os.environ, "CORRAL_RESULT_FILE": str(workdir / ".corral" / "result.json")}
    child = subprocess.Popen(launch_argv(argv, workdir) if shim else argv, cwd=workdir,
                             env=env, stdout=out, stderr=out, start_new_session=True)  # fmt: skip
    journal = Journal(data_dir)
    journal.record_started(AttemptRecord(job_id=job_id, attempt=1, pid=child.pid, pgid=child.pid,
                                         create_time=_procs.create_time(child.pid),
                                         workdir=workdir, started_at=time.time()))  # fmt: skip
    journal.close()
    return child


async def test_restart_keeps_or_stops_what_the_old_worker_ran(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    data = tmp_path / "data"
    kept = _leave_running(data, "j_keep", "import time; print('kept', flush=True); time.sleep(1)")
    stopped = _leave_running(data, "j_stop", "import time; time.sleep(60)", shim=False)
    fake.keep.add(("j_keep", 1))
    reapers = [asyncio.get_running_loop().run_in_executor(None, p.wait) for p in (kept, stopped)]
    try:
        code = await asyncio.wait_for(make_agent(url, tmp_path).run(), 20)
        await until(lambda: stopped.returncode is not None)
    finally:
        for p in (kept, stopped):
            p.kill()
        await asyncio.gather(*reapers)
    assert code == 0  # ephemeral: the kept attempt was its job
    offered = {(r["job_id"], r["attempt"]) for r in fake.registers[0]["running"]}
    assert offered == {("j_keep", 1), ("j_stop", 1)}
    [final] = fake.finals()
    assert fake.reports[-1][0] == "j_keep" and final["status"] == "succeeded"
    assert "kept" in fake.output(("j_keep", 1))  # its log was shipped after the restart
    assert stopped.returncode == -signal.SIGTERM  # not current any more: killed


async def test_restart_reports_how_adopted_attempts_ended(coordinator, tmp_path: Path) -> None:
    # A worker restarted under a long job must not turn its success into a failure: the
    # exit status recorded beside the job says how it ended, and with none the attempt is
    # not reported at all (the coordinator loses it and retries the job).
    fake, url = coordinator
    data = tmp_path / "data"
    wait = "import sys, time; from corral import sdk\nwhile not __import__('os').path.exists('go'): time.sleep(0.02)\n"  # noqa: E501
    procs = {
        "j_ok": _leave_running(data, "j_ok", wait + "sdk.set_result({'acc': 0.9})"),
        "j_bad": _leave_running(data, "j_bad", wait + "print('bad config'); sys.exit(3)"),
        "j_lost": _leave_running(data, "j_lost", wait, shim=False),
        "j_away": _leave_running(data, "j_away", "import corral.sdk as s; s.set_result({'a': 1})"),
    }
    procs["j_away"].wait()  # it ended while no worker ran
    fake.keep.update((j, 1) for j in procs)
    reapers = [asyncio.get_running_loop().run_in_executor(None, p.wait) for p in procs.values()]
    agent = make_agent(url, tmp_path, persistent=True)
    running = asyncio.create_task(agent.run())
    try:
        await until(lambda: len(agent.running) == 3)
        for job in ("j_ok", "j_bad", "j_lost"):
            (attempt_dir(data, job, 1) / "go").touch()
        await until(lambda: not agent.running and len(fake.finals()) == 3)
        seen = len(fake.heartbeats)
        await until(lambda: len(fake.heartbeats) >= seen + 2)
    finally:
        for p in procs.values():
            p.kill()
        await asyncio.gather(*reapers)
    finals = {j: r for j, r in fake.reports if r["status"] != "running"}
    assert finals.keys() == {"j_ok", "j_bad", "j_away"}
    assert finals["j_ok"]["status"] == "succeeded" and finals["j_ok"]["result"] == {"acc": 0.9}
    assert finals["j_away"]["status"] == "succeeded" and finals["j_away"]["result"] == {"a": 1}
    assert (finals["j_bad"]["status"], finals["j_bad"]["exit_code"]) == ("failed", 3)
    assert "bad config" in finals["j_bad"]["error"]
    assert fake.heartbeats[-1]["running"] == []  # j_lost is not claimed: it will be retried
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


async def test_a_result_owed_from_before_a_restart_goes_first(coordinator, tmp_path: Path) -> None:
    fake, url = coordinator
    journal = Journal(tmp_path / "data")
    report = AttemptReport(attempt=1, status="succeeded", result={"made": "before"})
    journal.finish("j_old", 1, report)
    journal.close()
    fake.reports_down = True
    agent = make_agent(url, tmp_path, persistent=True)
    running = asyncio.create_task(agent.run())
    await until(lambda: fake.registers)
    # Still owed: offered as running, so the coordinator keeps the attempt current for it.
    assert fake.registers[0]["running"] == [{"job_id": "j_old", "attempt": 1}]
    assert fake.calls.index("status") < fake.calls.index("register")  # it tried first
    fake.reports_down = False
    await until(lambda: fake.finals("j_old"))
    assert fake.finals("j_old")[0]["result"] == {"made": "before"}
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0


async def test_heartbeats_claim_an_ended_attempt_until_its_report_is_acked(
    coordinator, tmp_path: Path
) -> None:
    # The coordinator loses an attempt its worker's heartbeats stop listing, then refuses
    # its result: a final report still being retried must keep its attempt listed.
    fake, url = coordinator
    fake.reports_down = True
    agent = make_agent(url, tmp_path, persistent=True)
    running = asyncio.create_task(agent.run())
    fake.assign("j_1", "from corral import sdk; sdk.set_result({'n': 1})")
    await until(lambda: any(r["status"] == "succeeded" for r in fake.refused_reports))
    assert not agent.running  # ended: only its report is owed
    seen = len(fake.heartbeats)
    await until(lambda: len(fake.heartbeats) >= seen + 2)
    assert fake.heartbeats[-1]["running"] == [{"job_id": "j_1", "attempt": 1}]
    fake.reports_down = False
    await until(lambda: fake.finals("j_1"))
    seen = len(fake.heartbeats)
    await until(lambda: len(fake.heartbeats) >= seen + 2)
    assert fake.heartbeats[-1]["running"] == []  # acked: nothing more to claim
    agent.request_stop()
    assert await asyncio.wait_for(running, 10) == 0
