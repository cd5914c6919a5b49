"""Transactions that meet on one worker. Each test pauses one transaction at a named point
of the coordinator (``Core.hooks``) where another one used to slip in, and checks that the
outcome is the one a serial order gives. On PostgreSQL these are real races; on SQLite (one
writer) they pass by construction and pin the same behaviour."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import httpx
import pytest
from wire import next_event, register_worker

from corral.model import decide
from corral.model.snapshot import JobSnap
from corral.server import fleet
from corral.server.auth import Identity
from corral.store import jobs as jobs_q


def _hook(coord, point, pause_when):
    """Pause the first transaction that reaches ``point`` with facts for which
    ``pause_when(**facts)`` holds; returns an event set once it is paused. The pause is long
    enough for the other side to commit if nothing holds it back."""
    core = coord.app.state.core
    paused, armed = threading.Event(), [True]

    async def hook(tx, **facts):
        if armed and pause_when(**facts):
            armed.clear()
            paused.set()
            await asyncio.sleep(2.0)

    core.hooks[point] = hook
    return paused


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


def test_a_slow_cancel_does_not_hide_its_event_from_a_live_stream(coordinator):
    # Cancel A writes its job.cancel (id N) and is slow to commit; cancel B writes N+1 and
    # commits. A stream that sent N+1 must still send N: one worker's events commit in order.
    _, wc = register_worker(coordinator, slots=2)
    (a, b), last = _running_jobs(coordinator, wc, 2)
    opened = threading.Event()
    paused = _hook(coordinator, "notified", lambda notify: notify.event.job_id == a["id"])
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


def test_a_result_reported_during_a_cancel_is_kept(coordinator):
    # The report has read the job as running when a cancel commits: the result must still
    # be taken (running → succeeded, or cancelling → succeeded), never refused as stale.
    _, wc = register_worker(coordinator)
    (a,), _ = _running_jobs(coordinator, wc, 1)
    paused = _hook(coordinator, "report.read", lambda job_id: job_id == a["id"])
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


def test_a_report_and_a_disconnect_at_once_do_not_deadlock(coordinator):
    # The report has moved the job and holds it; the disconnect locks the worker, then loses
    # its jobs. Locked in opposite orders these deadlock and one side gets a 500.
    created, wc = register_worker(coordinator)
    (a,), _ = _running_jobs(coordinator, wc, 1)
    paused = _hook(coordinator, "moved", lambda move: move.job_id == a["id"])
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


def _meanwhile_in_a_round(coord, meanwhile) -> threading.Event:
    """Run ``await meanwhile(core, offers, now)`` in the first dispatch round that has chosen
    something, after it planned and before it locks and assigns; the event is set once that
    round has ended. ``meanwhile`` commits in a transaction of its own."""
    core = coord.app.state.core
    armed, round_over = [True], threading.Event()

    async def planned(tx, offers, chosen):
        if armed:
            armed.clear()
            await meanwhile(core, offers, tx.now)

    async def done(placed):
        if not armed:
            round_over.set()

    core.hooks.update({"round.planned": planned, "round.done": done})
    return round_over


def _needs_two_writers(db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer: nothing can commit inside a dispatch round")


def test_a_drain_during_a_dispatch_round_wins(coordinator, db_url):
    # The round has read the worker as IDLE when the drain commits. It must see the drain
    # before it assigns, or the worker declines a job it was never meant to get and the job
    # pays a retry for it.
    _needs_two_writers(db_url)
    created, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"], "max_retries": 0}).json()

    async def drain(core, offers, now):
        admin = Identity(tenant_id=offers[0].tenant_id, role="admin", key_id="test")
        await fleet.drain(core, admin, created["id"])

    round_over = _meanwhile_in_a_round(coordinator, drain)
    assert next_event(wc)["data"]["type"] == "worker.drain"  # opening the stream runs a round
    assert round_over.wait(10)
    with coordinator.client() as c:
        got = c.get(f"/api/jobs/{job['id']}").json()
        assert (got["state"], got["attempt"]) == ("queued", 0)
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] == "draining"


def test_a_slot_taken_during_a_round_is_not_given_twice(coordinator, db_url):
    # Another coordinator's round (here: an assignment in a second transaction) takes the
    # worker's only slot while this round is planning. This round must see that and leave
    # its job queued, not hand the worker two jobs for one slot.
    _needs_two_writers(db_url)
    created, wc = register_worker(coordinator, slots=1)
    with coordinator.client() as c:
        mine = c.post("/api/queue/submit", json={"command": ["a"], "priority": 9}).json()
        theirs = c.post("/api/queue/submit", json={"command": ["b"]}).json()

    async def assign_theirs(core, offers, now):
        async with core.tx() as other:
            job = await jobs_q.get(other.conn, offers[0].tenant_id, theirs["id"])
            assert not await other.apply([decide.assign(JobSnap.of(job), created["id"], now)])

    round_over = _meanwhile_in_a_round(coordinator, assign_theirs)
    assert next_event(wc)["data"]["job_id"] == theirs["id"]  # opening the stream runs a round
    assert round_over.wait(10)
    with coordinator.client() as c:
        got = c.get(f"/api/jobs/{mine['id']}").json()
    assert (got["state"], got["attempt"]) == ("queued", 0)
