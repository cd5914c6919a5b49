"""A job's and a worker's history: every change of state, why, by whom, and its cause."""

from __future__ import annotations

import json

import httpx
import structlog
from harness_e2e import wait_until
from ticks import tick
from wire import next_event, register_worker


def _events(c: httpx.Client, path: str, **params) -> list[dict]:
    r = c.get(path, params=params)
    assert r.status_code == 200, r.text
    return r.json()["events"]


def _job_events(c, job_id):
    return _events(c, f"/api/jobs/{job_id}/events")


def _submit(c, **body):
    r = c.post("/api/queue/submit", json={"command": ["sleep", "9"], **body})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_jobs_timeline_names_each_step_and_its_cause(clocked):
    coord, _ = clocked
    created, wc = register_worker(coord)
    with coord.client() as c:
        r = c.post("/api/queue/submit", json={"command": ["true"]},
                   headers={"X-Request-ID": "req-submit-1"})  # fmt: skip
        job = r.json()
        assert r.headers["x-request-id"] == "req-submit-1"
        next_event(wc)
        ran = wc.post(f"/api/workers/job/{job['id']}/status",
                      json={"attempt": 1, "status": "running"},
                      headers={"X-Request-ID": "req-running-1"})  # fmt: skip
        assert ran.status_code == 200
        done = wc.post(f"/api/workers/job/{job['id']}/status",
                       json={"attempt": 1, "status": "succeeded", "exit_code": 0})  # fmt: skip
        events = _job_events(c, job["id"])
    assert [e["kind"] for e in events] == [
        "job.submitted", "job.assigned", "job.running", "job.succeeded",
    ]  # fmt: skip
    submitted, assigned, running, succeeded = events
    assert submitted["cause"] == "req-submit-1" and submitted["actor"].startswith("key_")
    assert submitted["to_state"] == "queued"
    assert assigned["cause"].startswith("round_") and assigned["actor"] == "dispatcher"
    assert (assigned["worker_id"], assigned["attempt"]) == (created["id"], 1)
    assert running["cause"] == "req-running-1" and running["actor"] == created["id"]
    assert succeeded["cause"] == done.headers["x-request-id"]
    # How long it waited and ran, for the metrics (corral_dispatch_latency_seconds, …).
    assert running["detail"]["waited_s"] >= 0
    ran_s = succeeded["detail"].pop("ran_s")
    assert succeeded["detail"] == {"outcome": "succeeded", "exit_code": 0} and ran_s >= 0
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


def test_a_lost_attempt_says_why_and_how_long_until_the_retry(clocked):
    coord, clock = clocked
    created, wc = register_worker(coord)
    with coord.client() as c:
        job = _submit(c)
        next_event(wc)
        wc.post(f"/api/workers/job/{job['id']}/status", json={"attempt": 1, "status": "running"})
        clock.advance(121)
        tick(coord)
        requeued = _job_events(c, job["id"])[-1]
        offline = _events(c, f"/api/admin/workers/{created['id']}/events")[-1]
    assert requeued["kind"] == "job.requeued" and requeued["reason"] == "heartbeat_timeout"
    assert requeued["message"] == "no heartbeat for 120s"
    assert requeued["detail"]["outcome"] == "lost" and "backoff_s" in requeued["detail"]
    assert requeued["cause"].startswith("tick_") and requeued["actor"] == "reaper"
    assert (requeued["from_state"], requeued["to_state"], requeued["attempt"]) == (
        "running", "queued", 1,
    )  # fmt: skip
    assert offline["kind"] == "worker.offline" and offline["reason"] == "heartbeat_timeout"
    assert offline["cause"] == requeued["cause"]  # one tick made both


def test_each_way_of_losing_an_attempt_has_its_reason(clocked):
    coord, clock = clocked
    _, wc = register_worker(coord, slots=3)
    with coord.client() as c:
        unlisted, returned = _submit(c), _submit(c)
        last = None
        for _ in range(2):
            last = next_event(wc, last)["id"]
        wc.post(
            f"/api/workers/job/{returned['id']}/status", json={"attempt": 1, "status": "running"}
        )
        clock.advance(31)
        # Its heartbeat does not list the first (never claimed), but does list the second.
        wc.post(
            "/api/workers/heartbeat", json={"running": [{"job_id": returned["id"], "attempt": 1}]}
        )
        # Then it comes back without the second.
        wc.post("/api/workers/register", json={"slots": 3, "persistent": True})
        reasons = {j["id"]: _job_events(c, j["id"])[-1]["reason"] for j in (unlisted, returned)}
    assert reasons == {unlisted["id"]: "not_listed", returned["id"]: "came_back_without"}


def test_a_dropped_stream_and_a_removed_worker_are_named(clocked):
    coord, clock = clocked
    created, wc = register_worker(coord)
    with coord.client() as c:
        job = _submit(c, max_retries=0)
        assert next_event(wc)["data"]["job_id"] == job["id"]  # then its stream drops
        wait_until(lambda: not coord.app.state.core.hub.connected())
        clock.advance(11)
        tick(coord)
        assert _job_events(c, job["id"])[-1]["reason"] == "stream_dropped"
        worker = _events(c, f"/api/admin/workers/{created['id']}/events")
        assert [e["kind"] for e in worker][-2:] == ["worker.connected", "worker.offline"]
        assert worker[-1]["reason"] == "stream_dropped"

    # A worker deleted under a running job (only a store edited by hand can do that): its
    # attempt is lost as "its worker was removed".
    other, w2 = register_worker(coord, name="w2")
    with coord.client() as c:
        job2 = _submit(c)
        assert next_event(w2)["data"]["job_id"] == job2["id"]

    async def delete_worker() -> None:
        from sqlalchemy import delete

        from corral.store.tables import workers

        async with coord.app.state.core.store.tx() as conn:
            await conn.execute(delete(workers).where(workers.c.id == other["id"]))

    coord.call(delete_worker())
    tick(coord)
    with coord.client() as c:
        last = _job_events(c, job2["id"])[-1]
    assert (last["kind"], last["reason"], last["message"]) == (
        "job.requeued", "worker_removed", "its worker was removed",
    )  # fmt: skip


def test_a_cancel_says_who_asked(clocked):
    coord, _ = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        queued_only = c.post(
            "/api/queue/submit", json={"command": ["x"], "worker_labels": {"gpu": "none"}}
        ).json()
        running = _submit(c)
        next_event(wc)
        assert c.post(f"/api/jobs/{queued_only['id']}/cancel").status_code == 200
        assert c.post(f"/api/jobs/{running['id']}/cancel").status_code == 200
        wc.post(f"/api/workers/job/{running['id']}/status",
                json={"attempt": 1, "status": "cancelled", "exit_code": -15})  # fmt: skip
        early = _job_events(c, queued_only["id"])
        late = _job_events(c, running["id"])
    assert [e["kind"] for e in early] == ["job.submitted", "job.cancelled"]
    assert early[-1]["actor"].startswith("key_")
    asked, ended = late[-2:]
    assert asked["kind"] == "job.cancel_requested" and asked["actor"].startswith("key_")
    assert ended["kind"] == "job.cancelled" and ended["detail"]["outcome"] == "cancelled"


def test_a_workers_timeline(clocked):
    coord, _ = clocked
    created, wc = register_worker(coord)
    wid = created["id"]
    with coord.client() as c:
        with wc.stream("GET", "/api/workers/stream") as s:
            assert s.status_code == 200
            wait_until(lambda: _events(c, f"/api/admin/workers/{wid}/events")[-1]["kind"]
                       == "worker.connected")  # fmt: skip
        c.post(f"/api/admin/workers/{wid}/drain")
        new = c.post(f"/api/admin/workers/{wid}/token").json()
        w2 = httpx.Client(base_url=coord.url, headers={"X-Worker-Token": new["token"]})
        assert w2.post("/api/workers/disconnect").status_code == 204
        assert c.delete(f"/api/admin/workers/{wid}").status_code == 204
        events = _events(c, f"/api/admin/workers/{wid}/events")
    assert [e["kind"] for e in events] == [
        "worker.created", "worker.registered", "worker.connected", "worker.draining",
        "worker.token_rotated", "worker.offline", "worker.removed",
    ]  # fmt: skip
    by_kind = {e["kind"]: e for e in events}
    registered = by_kind["worker.registered"]["detail"]
    assert registered["address"] == "127.0.0.1" and registered["hostname"] == "h"
    assert registered["slots"] == 1 and registered["worker_type"] == "persistent"
    for kind in ("worker.created", "worker.draining", "worker.token_rotated", "worker.removed"):
        assert by_kind[kind]["actor"].startswith("key_"), kind
    assert by_kind["worker.offline"]["reason"] == "disconnected"


def test_history_pages_and_follows(clocked):
    coord, _ = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        job = _submit(c)
        next_event(wc)
        first = c.get(f"/api/jobs/{job['id']}/events", params={"limit": 1}).json()
        assert [e["kind"] for e in first["events"]] == ["job.submitted"]
        rest = c.get(f"/api/jobs/{job['id']}/events",
                     params={"cursor": first["next_cursor"]}).json()  # fmt: skip
        assert [e["kind"] for e in rest["events"]] == ["job.assigned"]
        assert rest["next_cursor"] is None
        assert c.get("/api/jobs/job_nope/events").status_code == 404
        assert c.get(f"/api/jobs/{job['id']}/events", params={"cursor": "x"}).status_code == 422
        # Digits to str.isdigit, not to int(): a 422 too, not a 500.
        assert c.get(f"/api/jobs/{job['id']}/events", params={"cursor": "³"}).status_code == 422

        seen: list[tuple[str, str]] = []
        with c.stream("GET", f"/api/jobs/{job['id']}/events", params={"follow": "true"},
                      headers={"Last-Event-ID": str(first["events"][0]["id"])}) as s:  # fmt: skip
            kind = None
            for line in s.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    seen.append((kind, data.get("kind") or data.get("state")))
                    if kind == "history" and data["kind"] == "job.assigned":
                        fail = {"attempt": 1, "status": "failed", "exit_code": 3}
                        wc.post(f"/api/workers/job/{job['id']}/status", json=fail)
                    if kind == "end":
                        break
    assert seen == [("history", "job.assigned"), ("history", "job.failed"), ("end", "failed")]


def test_history_is_kept_for_the_retention_only(clocked):
    coord, clock = clocked
    with coord.client() as c:
        old = _submit(c, worker_labels={"x": "y"})
        clock.advance(31 * 86400)
        new = _submit(c, worker_labels={"x": "y"})
        tick(coord)
        assert _job_events(c, old["id"]) == []
        assert [e["kind"] for e in _job_events(c, new["id"])] == ["job.submitted"]


def test_log_lines_carry_the_cause_and_refusals_leave_a_trace(clocked):
    coord, _ = clocked
    created, wc = register_worker(coord)
    with structlog.testing.capture_logs() as logs, coord.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["true"]},
                     headers={"X-Request-ID": "req-log-1"}).json()  # fmt: skip
        next_event(wc)
        bad = wc.post(f"/api/workers/job/{job['id']}/status", json={"attempt": 1, "status": "?"})
        assert bad.status_code == 422
    submitted = [e for e in logs if e["event"] == "job.submitted"]
    assert submitted and submitted[0]["cause"] == "req-log-1"
    assert submitted[0]["job_id"] == job["id"]
    assigned = [e for e in logs if e["event"] == "job.assigned"]
    assert assigned and assigned[0]["worker_id"] == created["id"] and assigned[0]["attempt"] == 1
    refused = [e for e in logs if e["event"] == "request.refused"]
    assert refused, logs
    assert refused[0]["status"] == 422 and refused[0]["log_level"] == "info"
    assert refused[0]["route"] == "/api/workers/job/{job_id}/status"
    assert refused[0]["caller"] == created["id"]
