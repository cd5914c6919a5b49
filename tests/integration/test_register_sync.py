"""Register as the sync point, on an injectable clock."""

from __future__ import annotations

import base64
from pathlib import Path

from harness import start_coordinator
from wire import next_event, register_worker

from corral.server.clock import FakeClock


def test_a_resent_assignment_gets_a_fresh_grace(tmp_path: Path, db_url: str) -> None:
    # The worker never received its job.assign (it was away past the unclaimed grace). When it
    # registers again the assignment is sent again; a heartbeat that comes before the stream
    # delivers it must not lose the attempt.
    clock = FakeClock()
    coord, stop = start_coordinator(tmp_path / "server", db_url, clock=clock)
    try:
        _, wc = register_worker(coord)
        with coord.client() as c:
            job = c.post("/api/queue/submit", json={"command": ["x"], "max_retries": 0}).json()
            assert next_event(wc)["data"]["job_id"] == job["id"]  # sent; say it never arrived
            clock.advance(60)
            again = wc.post("/api/workers/register", json={"slots": 1, "persistent": True})
            assert again.status_code == 200, again.text
            hb = wc.post("/api/workers/heartbeat", json={"running": []})
            assert hb.status_code == 200, hb.text
            got = c.get(f"/api/jobs/{job['id']}").json()
            assert (got["state"], got["attempt"]) == ("assigned", 1)
    finally:
        stop()


def test_a_cursor_holding_a_nul_is_refused(coordinator) -> None:
    bad = base64.urlsafe_b64encode(b"2026-01-01T00:00:00+00:00|job_\x00x").decode()
    with coordinator.client() as c:
        r = c.get("/api/jobs", params={"cursor": bad})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"


def test_a_registration_that_waited_past_a_newer_one_is_refused(coordinator) -> None:
    # Sent to a coordinator that froze, it arrives after the worker has registered again
    # elsewhere and taken a job: acting on its old list would lose that job.
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        first = wc.post("/api/workers/register", json={"slots": 1, "persistent": True,
                                                       "sent_ns": 2_000})  # fmt: skip
        assert first.status_code == 200, first.text
        job = c.post("/api/queue/submit", json={"command": ["sleep", "9"]}).json()
        assert next_event(wc)["data"]["job_id"] == job["id"]
        wc.post(f"/api/workers/job/{job['id']}/status", json={"attempt": 1, "status": "running"})
        late = wc.post("/api/workers/register", json={"slots": 1, "persistent": True,
                                                      "sent_ns": 1_000})  # fmt: skip
        assert late.status_code == 409 and late.json()["code"] == "stale_register"
        got = c.get(f"/api/jobs/{job['id']}").json()
        assert (got["state"], got["attempt"]) == ("running", 1)
        newer = wc.post("/api/workers/register", json={
            "slots": 1, "persistent": True, "sent_ns": 3_000,
            "running": [{"job_id": job["id"], "attempt": 1}],
        })  # fmt: skip
        assert newer.json()["keep"] == [{"job_id": job["id"], "attempt": 1}]


def test_a_registration_older_than_a_report_already_taken_is_refused(coordinator) -> None:
    # Newer than the last registration, but made before the worker took a job and said so:
    # it must not lose that job as "came back without it".
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        wc.post("/api/workers/register", json={"slots": 1, "persistent": True, "sent_ns": 1_000})
        job = c.post("/api/queue/submit", json={"command": ["sleep", "9"]}).json()
        assert next_event(wc)["data"]["job_id"] == job["id"]
        wc.post(f"/api/workers/job/{job['id']}/status",
                json={"attempt": 1, "status": "running", "sent_ns": 5_000})  # fmt: skip
        late = wc.post("/api/workers/register", json={"slots": 1, "persistent": True,
                                                      "sent_ns": 3_000})  # fmt: skip
        assert late.status_code == 409 and late.json()["code"] == "stale_register"
        assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "running"
