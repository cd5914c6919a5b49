"""Two coordinators on one PostgreSQL: a dropped stream at one never reaps a worker that
has moved to the other."""

from __future__ import annotations

import httpx
import pytest
from harness import Coordinator, fresh_database, start_coordinator
from harness_e2e import wait_until
from wire import next_event

from corral.server import reaper
from corral.store import workers as workers_q


def on_loop(coord: Coordinator, fn):
    """fn() on the coordinator's own loop: its hub is not shared with this thread."""

    async def run():
        return fn()

    return coord.call(run())


def owned_by(coord: Coordinator, worker_id: str) -> bool:
    """Whether workers.stream_owner, as the database holds it now, is this coordinator."""

    async def read() -> str | None:
        async with coord.app.state.core.store.tx() as conn:
            [row] = await workers_q.by_ids(conn, [worker_id])
            return row["stream_owner"]

    owner = coord.call(read()) or ""
    return owner.startswith(f"{coord.app.state.core.hub.instance}:")


@pytest.mark.postgres
def test_late_noticed_drop_does_not_reap_a_worker_now_at_the_other(tmp_path):
    with fresh_database("postgres", tmp_path) as url:
        # A's reaper runs only when the test ticks it, once the drop is known and past its
        # grace: so the check below cannot pass because A had not looked yet.
        a, stop_a = start_coordinator(tmp_path / "a", url, reaper=False, stream_grace_s=0.3)
        b, stop_b = start_coordinator(tmp_path / "b", url, bootstrap_admin_key=a.admin_key)
        try:
            hub_a = a.app.state.core.hub
            with a.client() as c:
                created = c.post("/api/admin/workers", json={"name": "w"}).json()
                wid = created["id"]
                h = {"X-Worker-Token": created["token"]}
                wa = httpx.Client(base_url=a.url, headers=h, timeout=10)
                wa.post("/api/workers/register", json={"slots": 1, "persistent": True})
                job = c.post("/api/queue/submit", json={"command": ["sleep", "999"]}).json()
                ev = next_event(wa)
                wa.post(f"/api/workers/job/{job['id']}/status",
                        json={"attempt": 1, "status": "running"})  # fmt: skip
                # a stream at A that is about to go dead without A noticing yet
                with wa.stream("GET", "/api/workers/stream",
                               headers={"Last-Event-ID": str(ev["id"])}, timeout=None):  # fmt: skip
                    wait_until(lambda: wid in on_loop(a, hub_a.connected))
                    # A's write of the owner is in, so it cannot land after B's
                    wait_until(lambda: owned_by(a, wid))
                    # the worker moves to B, keeping its attempt, and streams there
                    wb = httpx.Client(base_url=b.url, headers=h, timeout=10)
                    running = [{"job_id": job["id"], "attempt": 1}]
                    body = {"slots": 1, "persistent": True, "running": running}
                    r = wb.post("/api/workers/register", json=body)
                    assert r.json()["keep"]
                    with wb.stream("GET", "/api/workers/stream", timeout=None):
                        wait_until(lambda: owned_by(b, wid))  # B has recorded itself as owner
                        # leaving the inner block first would be B's drop; leave A's now:
                        wa.close()
                        # A notices the drop, its grace passes, and only then its reaper ticks
                        wait_until(
                            lambda: wid in on_loop(a, lambda: hub_a.dropped_longer_than(0.3))
                        )
                        a.call(reaper.tick(a.app.state.core))
                        # that tick weighed the drop (and let it go)
                        assert wid not in on_loop(a, lambda: hub_a.dropped_longer_than(0))
                        w = c.get("/api/admin/workers").json()["workers"][0]
                        j = c.get(f"/api/jobs/{job['id']}").json()
                        assert w["status"] != "offline"
                        assert j["state"] == "running" and j["attempt"] == 1
        finally:
            stop_a()
            stop_b()


@pytest.mark.postgres
def test_a_rotated_token_stops_at_once_at_a_coordinator_that_knew_it(tmp_path):
    # B has seen the token (and remembers it); the rotation goes through A. Every worker
    # call to B with the old token must fail at once, not when B's memory of it ends.
    with fresh_database("postgres", tmp_path) as url:
        a, stop_a = start_coordinator(tmp_path / "a", url)
        b, stop_b = start_coordinator(tmp_path / "b", url, bootstrap_admin_key=a.admin_key)
        try:
            with a.client() as c:
                created = c.post("/api/admin/workers", json={"name": "w"}).json()
                job = c.post("/api/queue/submit", json={"command": ["sleep", "999"]}).json()
            old = httpx.Client(base_url=b.url, headers={"X-Worker-Token": created["token"]})
            assert old.post("/api/workers/register", json={"slots": 1}).status_code == 200
            assert old.post("/api/workers/heartbeat", json={}).status_code == 200
            with a.client() as c:
                c.post(f"/api/admin/workers/{created['id']}/token").raise_for_status()
            calls = [
                ("/api/workers/heartbeat", {}),
                ("/api/workers/register", {"slots": 1}),
                (f"/api/workers/job/{job['id']}/status", {"attempt": 1, "status": "running"}),
                (f"/api/workers/job/{job['id']}/logs", {"attempt": 1, "seq": 0, "data": "x"}),
                ("/api/workers/disconnect", None),
            ]
            for path, body in calls:
                r = old.post(path, json=body)
                assert (path, r.status_code) == (path, 401), r.text
            assert old.get("/api/workers/stream").status_code == 401
        finally:
            stop_b()
            stop_a()
