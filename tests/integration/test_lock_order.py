"""Transactions that meet on one worker. Each test slows one transaction down at the point
where another one used to slip in (a real pause inside the open transaction), and checks
that the outcome is the one a serial order gives. On PostgreSQL these are real races; on
SQLite (one writer) they pass by construction and pin the same behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import httpx
import pytest
from wire import next_event, register_worker

from corral.server import fleet, leases
from corral.server import jobs as server_jobs
from corral.store import jobs as jobs_q
from corral.store import streams


def _running_jobs(coord, wc, n):
    with coord.client() as c:
        jobs = [c.post("/api/queue/submit", json={"command": ["sleep", "999"]}).json()
                for _ in range(n)]  # fmt: skip
    last = None
    for _ in jobs:
        last = next_event(wc, last)["id"]
    for j in jobs:
        r = wc.post(f"/api/workers/job/{j['id']}/status", json={"attempt": 1, "status": "running"})
        assert r.status_code == 200, r.text
    return jobs, last


def test_a_slow_cancel_does_not_hide_its_event_from_a_live_stream(coordinator, monkeypatch):
    # Cancel A writes its job.cancel (id N) and is slow to commit; cancel B writes N+1 and
    # commits. A stream that sent N+1 must still send N: one worker's events commit in order.
    _, wc = register_worker(coordinator, slots=2)
    (a, b), last = _running_jobs(coordinator, wc, 2)
    slow, paused, opened = {a["id"]}, threading.Event(), threading.Event()
    push = streams.push_event

    async def slow_push(conn, **kw):
        await push(conn, **kw)
        if kw["data"].get("job_id") in slow:
            slow.clear()
            paused.set()
            await asyncio.sleep(2.0)

    monkeypatch.setattr(streams, "push_event", slow_push)
    seen: list[str] = []

    def consume() -> None:
        headers = {"Last-Event-ID": str(last)}
        with (
            contextlib.suppress(httpx.ReadTimeout),
            wc.stream("GET", "/api/workers/stream", headers=headers, timeout=20) as r,
        ):
            opened.set()
            for line in r.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:])["job_id"])
                    if len(seen) == 2:
                        return

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert opened.wait(10)  # the stream is open and waiting before the cancels start

    def cancel(job) -> None:
        with coordinator.client() as c:
            assert c.post(f"/api/jobs/{job['id']}/cancel").status_code == 200

    first = threading.Thread(target=cancel, args=(a,))
    first.start()
    assert paused.wait(10)  # A's event is written, its transaction still open
    cancel(b)
    first.join()
    reader.join(10)  # the stream polls the outbox only every 15 s without a wake-up
    assert sorted(seen) == sorted([a["id"], b["id"]])


def test_a_result_reported_during_a_cancel_is_kept(coordinator, monkeypatch):
    # The report has read the job as running when a cancel commits: the result must still
    # be taken (running → succeeded, or cancelling → succeeded), never refused as stale.
    _, wc = register_worker(coordinator)
    (a,), _ = _running_jobs(coordinator, wc, 1)
    current = server_jobs._current_attempt
    slow, paused = {a["id"]}, threading.Event()

    async def slow_read(t, w, job_id, attempt, **kw):
        row = await current(t, w, job_id, attempt, **kw)
        if job_id in slow:
            slow.clear()
            paused.set()
            await asyncio.sleep(2.0)
        return row

    monkeypatch.setattr(server_jobs, "_current_attempt", slow_read)
    got: dict[str, httpx.Response] = {}
    report = {"attempt": 1, "status": "succeeded", "exit_code": 0, "result": {"acc": 0.99}}

    def send() -> None:
        got["r"] = wc.post(f"/api/workers/job/{a['id']}/status", json=report)

    sender = threading.Thread(target=send)
    sender.start()
    assert paused.wait(10)  # inside its transaction, paused
    with coordinator.client() as c:
        cancelled = c.post(f"/api/jobs/{a['id']}/cancel")
        sender.join()
        assert got["r"].status_code == 200, got["r"].text
        job = c.get(f"/api/jobs/{a['id']}").json()
    assert (job["state"], job["result"]) == ("succeeded", {"acc": 0.99})
    assert cancelled.status_code == 409  # it had already ended


def test_a_report_and_a_disconnect_at_once_do_not_deadlock(coordinator, monkeypatch):
    # The report locks the job, then settles its worker; the disconnect locks the worker,
    # then loses its jobs. In opposite orders these deadlock and one side gets a 500.
    created, wc = register_worker(coordinator)
    (a,), _ = _running_jobs(coordinator, wc, 1)
    settle = leases.settle_worker
    armed, paused = [True], threading.Event()

    async def slow_settle(t, worker_id):
        if armed:
            armed.clear()
            paused.set()
            await asyncio.sleep(2.0)
        return await settle(t, worker_id)

    monkeypatch.setattr(leases, "settle_worker", slow_settle)
    got: dict[str, httpx.Response] = {}
    report = {"attempt": 1, "status": "succeeded", "exit_code": 0}

    def send() -> None:
        got["r"] = wc.post(f"/api/workers/job/{a['id']}/status", json=report, timeout=20)

    sender = threading.Thread(target=send)
    sender.start()
    assert paused.wait(10)  # inside its transaction, paused
    headers = {"X-Worker-Token": created["token"]}
    with httpx.Client(base_url=coordinator.url, headers=headers, timeout=20) as other:
        gone = other.post("/api/workers/disconnect")
    sender.join()
    assert (got["r"].status_code, gone.status_code) == (200, 204), (got["r"].text, gone.text)
    with coordinator.client() as c:
        assert c.get(f"/api/jobs/{a['id']}").json()["state"] == "succeeded"


def _meanwhile_in_a_round(monkeypatch, meanwhile) -> threading.Event:
    """Run ``await meanwhile(dispatcher, offers, now)`` in the first dispatch round that has
    chosen something, after it planned and before it assigns; the event is set once that
    round has ended. ``meanwhile`` commits in a transaction of its own."""
    from corral.server import dispatch

    plan, round_ = dispatch.Dispatcher._plan, dispatch.Dispatcher.round
    armed, round_over = [True], threading.Event()

    async def plan_then_meanwhile(self, t, offers, now):
        chosen = await plan(self, t, offers, now)
        if chosen and armed:
            armed.clear()
            await meanwhile(self, offers, now)
        return chosen

    async def round_and_tell(self):
        placed = await round_(self)
        if not armed:
            round_over.set()
        return placed

    monkeypatch.setattr(dispatch.Dispatcher, "_plan", plan_then_meanwhile)
    monkeypatch.setattr(dispatch.Dispatcher, "round", round_and_tell)
    return round_over


def _needs_two_writers(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: nothing can commit inside a dispatch round")


def test_a_drain_during_a_dispatch_round_wins(coordinator, db_url, monkeypatch):
    # The round has read the worker as IDLE when the drain commits. It must see the drain
    # before it assigns, or the worker declines a job it was never meant to get and the job
    # pays a retry for it.
    _needs_two_writers(db_url)
    created, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"], "max_retries": 0}).json()

    async def drain(dispatcher, offers, now):
        await fleet.drain(dispatcher.core, offers[0].tenant_id, created["id"])

    round_over = _meanwhile_in_a_round(monkeypatch, drain)
    assert next_event(wc)["data"]["type"] == "worker.drain"  # opening the stream runs a round
    assert round_over.wait(10)
    with coordinator.client() as c:
        got = c.get(f"/api/jobs/{job['id']}").json()
        assert (got["state"], got["attempt"]) == ("queued", 0)
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] == "draining"


def test_a_slot_taken_during_a_round_is_not_given_twice(coordinator, db_url, monkeypatch):
    # Another coordinator's round (here: an assignment in a second transaction) takes the
    # worker's only slot while this round is planning. This round must see that and leave
    # its job queued, not hand the worker two jobs for one slot.
    _needs_two_writers(db_url)
    created, wc = register_worker(coordinator, slots=1)
    with coordinator.client() as c:
        mine = c.post("/api/queue/submit", json={"command": ["a"], "priority": 9}).json()
        theirs = c.post("/api/queue/submit", json={"command": ["b"]}).json()

    async def assign_theirs(dispatcher, offers, now):
        async with dispatcher.core.tx() as other:
            job = await jobs_q.get(other.conn, offers[0].tenant_id, theirs["id"])
            assert await dispatcher._assign(other, job, created["id"], now)

    round_over = _meanwhile_in_a_round(monkeypatch, assign_theirs)
    assert next_event(wc)["data"]["job_id"] == theirs["id"]  # opening the stream runs a round
    assert round_over.wait(10)
    with coordinator.client() as c:
        got = c.get(f"/api/jobs/{mine['id']}").json()
    assert (got["state"], got["attempt"]) == ("queued", 0)
