"""Leases, the reaper and the fleet's admin moves, driven by an injectable clock."""

from __future__ import annotations

import httpx
from harness import start_coordinator
from harness_e2e import wait_until
from ticks import tick
from wire import next_event, register_worker

from corral.server.clock import FakeClock


def test_silent_worker_goes_offline_and_its_job_is_requeued(clocked):
    coord, clock = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["sleep", "1"]}).json()
        assert next_event(wc)["data"]["job_id"] == job["id"]
        wc.post(f"/api/workers/job/{job['id']}/status", json={"attempt": 1, "status": "running"})
        tick(coord)
        assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "running"
        clock.advance(121)
        tick(coord)
        tick(coord)  # idempotent: a second tick changes nothing more
        got = c.get(f"/api/jobs/{job['id']}").json()
        assert got["state"] == "queued" and got["attempt"] == 1
        assert "no heartbeat" in got["error"] or "stream" in got["error"]
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] == "offline"
        # the stale worker's report is refused: it must stop that process
        r = wc.post(f"/api/workers/job/{job['id']}/status",
                    json={"attempt": 1, "status": "succeeded", "exit_code": 0})  # fmt: skip
        assert r.status_code == 409 and r.json()["code"] == "stale_attempt"
        # back again: it re-registers, its old attempt is to be stopped, and it gets attempt 2
        r = wc.post("/api/workers/register",
                    json={"slots": 1, "persistent": True,
                          "running": [{"job_id": job["id"], "attempt": 1}]})  # fmt: skip
        assert r.json()["stop"] == [{"job_id": job["id"], "attempt": 1}]
        ev = next_event(wc)
        assert ev["data"]["job_id"] == job["id"] and ev["data"]["attempt"] == 2
        attempts = c.get(f"/api/jobs/{job['id']}").json()["attempts"]
        assert [a["outcome"] for a in attempts] == ["lost", None]


def test_no_retries_left_fails_with_the_reason(clocked):
    coord, clock = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"], "max_retries": 0}).json()
        next_event(wc)
        clock.advance(200)
        tick(coord)
        got = c.get(f"/api/jobs/{job['id']}").json()
        assert got["state"] == "failed" and got["error"]


def test_restarted_coordinator_keeps_current_attempts(tmp_path, db_url):
    coord, stop = start_coordinator(tmp_path / "s", db_url)
    created, wc = register_worker(coord)
    with coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["sleep", "9"]}).json()
    next_event(wc)
    wc.post(f"/api/workers/job/{job['id']}/status", json={"attempt": 1, "status": "running"})
    stop()
    coord2, stop2 = start_coordinator(tmp_path / "s", db_url)
    try:
        w2 = httpx.Client(base_url=coord2.url, headers={"X-Worker-Token": created["token"]})
        r = w2.post("/api/workers/register",
                    json={"slots": 1, "persistent": True,
                          "running": [{"job_id": job["id"], "attempt": 1}]})  # fmt: skip
        assert r.json()["keep"] == [{"job_id": job["id"], "attempt": 1}]
        r = w2.post(f"/api/workers/job/{job['id']}/status",
                    json={"attempt": 1, "status": "succeeded", "exit_code": 0})  # fmt: skip
        assert r.status_code == 200 and r.json()["state"] == "succeeded"
    finally:
        stop2()


def test_drain_rotate_and_remove(clocked):
    coord, _ = clocked
    created, wc = register_worker(coord)
    wid = created["id"]
    with coord.client() as c:
        assert c.delete(f"/api/admin/workers/{wid}").status_code == 409
        assert c.post(f"/api/admin/workers/{wid}/drain").json()["status"] == "draining"
        assert next_event(wc)["event"] == "worker.drain"
        c.post("/api/queue/submit", json={"command": ["true"]})
        hb = wc.post("/api/workers/heartbeat", json={})
        assert hb.json()["status"] == "draining"
        new = c.post(f"/api/admin/workers/{wid}/token").json()
        assert wc.post("/api/workers/heartbeat", json={}).status_code == 401
        w2 = httpx.Client(base_url=coord.url, headers={"X-Worker-Token": new["token"]})
        assert w2.post("/api/workers/heartbeat", json={}).status_code == 200
        assert w2.post("/api/workers/disconnect").status_code == 204
        assert c.delete(f"/api/admin/workers/{wid}").status_code == 204
        assert c.get("/api/admin/workers").json()["workers"] == []
        assert c.get("/api/jobs", params={"state": "queued"}).json()["jobs"]


def test_ephemeral_worker_gets_exactly_one_job(clocked):
    coord, _ = clocked
    _, wc = register_worker(coord, slots=4, persistent=False)
    with coord.client() as c:
        for _ in range(3):
            c.post("/api/queue/submit", json={"command": ["true"]})
        first = next_event(wc)
        coord.call(coord.app.state.dispatcher.round())
        assert len(c.get("/api/jobs", params={"state": "assigned"}).json()["jobs"]) == 1
        assert first["data"]["attempt"] == 1


def test_dropped_stream_is_suspect_then_offline_unless_heard_from(clocked):
    coord, clock = clocked
    _, w1 = register_worker(coord, name="quiet")
    _, w2 = register_worker(coord, name="talker")
    hub = coord.app.state.core.hub
    with w1.stream("GET", "/api/workers/stream"), w2.stream("GET", "/api/workers/stream"):
        with coord.client() as c:
            wait_until(lambda: {w["status"] for w in c.get("/api/admin/workers").json()["workers"]}
                       == {"idle"})  # fmt: skip
    wait_until(lambda: not hub.connected())  # both streams dropped
    clock.advance(11)
    w2.post("/api/workers/heartbeat", json={})
    tick(coord)
    with coord.client() as c:
        status = {w["name"]: w["status"] for w in c.get("/api/admin/workers").json()["workers"]}
    assert status == {"quiet": "offline", "talker": "idle"}


def test_a_stream_dropped_while_the_coordinator_could_not_act_gets_a_whole_grace(clocked):
    # Its stream dropped while the database was out of reach: the worker's reconnects were
    # refused (503), through no fault of its own. Once the coordinator acts again the
    # worker gets the stream grace from then, not from the drop.
    coord, clock = clocked
    core = coord.app.state.core
    grace = core.settings.stream_grace_s
    _, wc = register_worker(coord)
    with wc.stream("GET", "/api/workers/stream"), coord.client() as c:
        wait_until(lambda: c.get("/api/admin/workers").json()["workers"][0]["status"] == "idle")
    wait_until(lambda: not core.hub.connected())  # dropped
    clock.advance(grace + 5)  # longer ago than the grace...
    core.acted_at = core.monotonic() - 60  # ...while the coordinator could not act
    tick(coord)
    with coord.client() as c:
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] != "offline"
        clock.advance(grace + 1)  # and it never came back
        tick(coord)
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] == "offline"


def test_attempt_its_worker_does_not_hold_is_lost_after_the_grace(clocked):
    coord, clock = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["true"]}).json()
        next_event(wc)
        wc.post("/api/workers/heartbeat", json={"running": []})
        assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "assigned"  # still on its way
        clock.advance(31)
        wc.post("/api/workers/heartbeat", json={"running": []})
        got = c.get(f"/api/jobs/{job['id']}").json()
        assert got["state"] == "queued" and "does not hold" in got["error"]


def test_event_ids_never_repeat_after_register_clears_the_outbox(clocked):
    coord, _ = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        c.post("/api/queue/submit", json={"command": ["a"]})
        first = next_event(wc)
        # the worker reconnects (register clears its outbox) and resumes from the id it saw
        wc.post("/api/workers/register",
                json={"slots": 2, "persistent": True,
                      "running": [{"job_id": first["data"]["job_id"], "attempt": 1}]})  # fmt: skip
        second_job = c.post("/api/queue/submit", json={"command": ["b"]}).json()
        ev = next_event(wc, last_id=first["id"])
        assert ev["id"] > first["id"] and ev["data"]["job_id"] == second_job["id"]


def test_a_restarted_coordinator_gives_workers_a_whole_timeout(tmp_path, db_url):
    clock = FakeClock()
    coord, stop = start_coordinator(tmp_path / "s", db_url, clock=clock)
    _, wc = register_worker(coord)
    with coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["sleep", "9"]}).json()
    next_event(wc)
    stop()
    clock.advance(600)  # the coordinator was down for ten minutes
    coord2, stop2 = start_coordinator(tmp_path / "s", db_url, clock=clock)
    try:
        tick(coord2)
        with coord2.client() as c:
            assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "assigned"
            clock.advance(121)  # and then it really is silent
            tick(coord2)
            assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "queued"
    finally:
        stop2()


def test_jobs_that_fit_nowhere_do_not_hide_the_ones_behind_them(clocked, monkeypatch):
    from corral.server import dispatch

    monkeypatch.setattr(dispatch, "BATCH", 3)  # pages of 3, so the queue spans pages
    coord, _ = clocked
    with coord.client() as c:
        for _ in range(7):
            c.post("/api/queue/submit", json={"command": ["x"], "priority": 5,
                                              "worker_labels": {"gpu": "h100"}})  # fmt: skip
        plain = c.post("/api/queue/submit", json={"command": ["y"]}).json()
    _, wc = register_worker(coord)
    assert next_event(wc)["data"]["job_id"] == plain["id"]


def test_offline_ephemeral_workers_are_removed_after_the_ttl(clocked):
    coord, clock = clocked
    _, spot = register_worker(coord, name="spot", persistent=False)
    _, box = register_worker(coord, name="box", persistent=True)
    spot.post("/api/workers/disconnect")
    box.post("/api/workers/disconnect")
    clock.advance(3599)
    tick(coord)
    with coord.client() as c:
        assert {w["name"] for w in c.get("/api/admin/workers").json()["workers"]} == {"spot", "box"}
        clock.advance(2)
        tick(coord)
        assert [w["name"] for w in c.get("/api/admin/workers").json()["workers"]] == ["box"]


def test_a_worker_that_never_registered_gets_no_stream_and_no_work(clocked):
    coord, _ = clocked
    with coord.client() as c:
        created = c.post("/api/admin/workers", json={"name": "sneaky"}).json()
        job = c.post("/api/queue/submit", json={"command": ["true"]}).json()
    wc = httpx.Client(base_url=coord.url, headers={"X-Worker-Token": created["token"]})
    r = wc.get("/api/workers/stream")
    assert r.status_code == 409 and r.json()["code"] == "not_registered"
    with coord.client() as c:
        assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "queued"
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] == "offline"


def test_a_connected_worker_never_heard_from_is_timed_out(clocked):
    # A worker whose last heartbeat is empty counts as silent since it was created, so the
    # reaper takes it and its jobs back instead of leaving them assigned for ever.
    coord, clock = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["true"]}).json()
        next_event(wc)

        async def forget_heartbeat() -> None:
            from sqlalchemy import update

            from corral.store.tables import workers

            async with coord.app.state.core.store.tx() as conn:
                await conn.execute(update(workers).values(last_heartbeat=None))

        coord.call(forget_heartbeat())
        clock.advance(121)
        tick(coord)
        assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "queued"
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] == "offline"


def test_a_freeze_in_the_middle_of_a_tick_gives_every_worker_a_whole_timeout(clocked):
    # The tick read its clock, then the process stood still (SIGSTOP) while the world went
    # on: the heartbeats that waited meanwhile are taken only after it thaws. The next tick
    # must not count them late and reap a healthy worker.
    import time

    coord, clock = clocked
    core = coord.app.state.core
    _, wc = register_worker(coord)
    with coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["sleep", "1"]}).json()
        assert next_event(wc)["data"]["job_id"] == job["id"]
        wc.post(f"/api/workers/job/{job['id']}/status", json={"attempt": 1, "status": "running"})
        held = wc.stream("GET", "/api/workers/stream", timeout=30)  # its stream stays open
        assert held.__enter__().status_code == 200
        tick(coord)
        real, base, calls = core.monotonic, time.monotonic(), [0]

        def frozen_mid_tick() -> float:
            calls[0] += 1
            if calls[0] == 3:  # the tick's end: it began 60 s ago, and 121 s went by
                clock.advance(121)
            return base if calls[0] < 3 else base + 60

        core.monotonic = frozen_mid_tick
        try:
            tick(coord)
        finally:
            core.monotonic = real
        assert calls[0] >= 3
        tick(coord)
        got = c.get(f"/api/jobs/{job['id']}").json()
        assert got["state"] == "running" and got["attempt"] == 1, got
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] != "offline"
        held.__exit__(None, None, None)


def test_a_busy_worker_is_offered_calls_and_the_commands_queued_are_not_read(clocked, monkeypatch):
    from corral.server import dispatch

    coord, clock = clocked
    read: list[str] = []
    ready = dispatch.jobs_q.ready

    async def counted(*args, **kw):
        rows = await ready(*args, **kw)
        read.extend(r["kind"] for r in rows)
        return rows

    monkeypatch.setattr(dispatch.jobs_q, "ready", counted)
    call = {"kind": "call", "call": {"target": "m:f", "args": [], "kwargs": {}}}
    with coord.client() as c:
        for _ in range(31):
            c.post("/api/queue/submit", json={"command": ["true"]})
        clock.advance(1)  # the call behind the commands in claim order
        r = c.post("/api/queue/submit-batch", json={"jobs": [call]})
        assert r.status_code in (200, 201), r.text
        (held,) = r.json()["jobs"]
        _, wc = register_worker(coord)
        r = wc.post("/api/workers/register", json={"hostname": "h", "slots": 1, "prefetch": 2,
                                                   "persistent": True})  # fmt: skip
        assert r.status_code == 200, r.text
        one = next_event(wc)
        two = next_event(wc, one["id"])
        # The slot takes a command (the commands were all submitted at one instant of the
        # fake clock, before the call); the prefetch takes the call, not another command.
        assert one["data"]["kind"] == "command" and two["data"]["job_id"] == held["id"]
        assert c.get(f"/api/jobs/{held['id']}").json()["state"] == "assigned"
        queued = c.get("/api/jobs", params={"state": "queued", "limit": 100}).json()["jobs"]
        assert len(queued) == 30
    # Once the slot was taken only calls could be placed: the backlog of commands behind the
    # first page was not read.
    assert read.count("command") < 30, read


def test_the_round_keeps_worker_snapshots_and_sees_each_change(clocked):
    """A round reads a connected worker once and keeps it (so a fleet of thousands is not
    read every round); a change to the worker here is seen by the very next round."""
    from sqlalchemy import event

    coord, _ = clocked
    created, wc = register_worker(coord, slots=4)
    engine = coord.app.state.core.store.engine.sync_engine
    reads: list[str] = []

    def count(_conn, _cursor, statement, *_args):
        if statement.lstrip().startswith("SELECT") and "FROM workers" in statement:
            reads.append(statement)

    with wc.stream("GET", "/api/workers/stream"), coord.client() as c:
        wait_until(lambda: coord.app.state.core.hub.connected())
        first = c.post("/api/queue/submit", json={"command": ["true"]}).json()
        wait_until(lambda: c.get(f"/api/jobs/{first['id']}").json()["state"] == "assigned")
        event.listen(engine, "before_cursor_execute", count)
        try:
            second = c.post("/api/queue/submit", json={"command": ["true"]}).json()
            wait_until(lambda: c.get(f"/api/jobs/{second['id']}").json()["state"] == "assigned")
            # Kept, not read again (PostgreSQL still locks and reads the chosen one).
            unlocked = [s for s in reads if "workers.slots" in s and " FOR " not in s]
            assert not unlocked, unlocked
            assert c.post(f"/api/admin/workers/{created['id']}/drain").status_code == 200
            third = c.post("/api/queue/submit", json={"command": ["true"]}).json()
            coord.call(coord.app.state.dispatcher.round())
            assert c.get(f"/api/jobs/{third['id']}").json()["state"] == "queued"
        finally:
            event.remove(engine, "before_cursor_execute", count)
