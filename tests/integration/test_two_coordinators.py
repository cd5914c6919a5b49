"""Two coordinators on one PostgreSQL: a dropped stream at one never reaps a worker that
has moved to the other."""

from __future__ import annotations

import time

import httpx
import pytest
from harness import fresh_database, start_coordinator
from wire import next_event


@pytest.mark.postgres
def test_late_noticed_drop_does_not_reap_a_worker_now_at_the_other(tmp_path):
    with fresh_database("postgres", tmp_path) as url:
        a, stop_a = start_coordinator(tmp_path / "a", url, stream_grace_s=0.3,
                                      reaper_interval_s=0.1)  # fmt: skip
        b, stop_b = start_coordinator(tmp_path / "b", url)
        try:
            with a.client() as c:
                created = c.post("/api/admin/workers", json={"name": "w"}).json()
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
                    hub_a = a.app.state.core.hub
                    deadline = time.monotonic() + 10
                    while not hub_a.connected():
                        assert time.monotonic() < deadline
                        time.sleep(0.02)
                    # the worker moves to B, keeping its attempt, and streams there
                    wb = httpx.Client(base_url=b.url, headers=h, timeout=10)
                    running = [{"job_id": job["id"], "attempt": 1}]
                    body = {"slots": 1, "persistent": True, "running": running}
                    r = wb.post("/api/workers/register", json=body)
                    assert r.json()["keep"]
                    with wb.stream("GET", "/api/workers/stream", timeout=None):
                        hub_b = b.app.state.core.hub
                        while not hub_b.connected():
                            assert time.monotonic() < deadline
                            time.sleep(0.02)
                        time.sleep(0.3)  # B has recorded itself as the stream's owner
                        # leaving the inner block first would be B's drop; leave A's now:
                        wa.close()
                        time.sleep(1.5)  # several of A's reaper ticks past its grace
                        w = c.get("/api/admin/workers").json()["workers"][0]
                        j = c.get(f"/api/jobs/{job['id']}").json()
                        assert w["status"] != "offline"
                        assert j["state"] == "running" and j["attempt"] == 1
        finally:
            stop_a()
            stop_b()
