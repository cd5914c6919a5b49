"""The worker protocol spoken by hand against a real coordinator: fencing, idempotency."""

from __future__ import annotations

import time

import httpx
from wire import next_event, register_worker


def test_assign_report_and_fencing(coordinator):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["echo", "hi"]}).json()
        assert job["state"] == "queued"
        ev = next_event(wc)
        assert ev["event"] == "job.assign" and ev["data"]["type"] == "job.assign"
        assert ev["data"]["job_id"] == job["id"] and ev["data"]["attempt"] == 1
        jid = job["id"]
        r = wc.post(f"/api/workers/job/{jid}/status", json={"attempt": 1, "status": "running"})
        assert r.status_code == 200 and r.json()["state"] == "running"
        r = wc.post(f"/api/workers/job/{jid}/logs", json={"attempt": 1, "seq": 0, "data": "hi\n"})
        assert r.status_code == 204
        r = wc.post(f"/api/workers/job/{jid}/logs", json={"attempt": 1, "seq": 0, "data": "hi\n"})
        assert r.status_code == 204  # a repeated batch is stored once
        # a report for an attempt that never existed is refused
        r = wc.post(f"/api/workers/job/{jid}/status", json={"attempt": 2, "status": "succeeded"})
        assert r.status_code == 409 and r.json()["code"] == "stale_attempt"
        done = {"attempt": 1, "status": "succeeded", "exit_code": 0, "result": {"x": 1}}
        r = wc.post(f"/api/workers/job/{jid}/status", json=done)
        assert r.status_code == 200 and r.json()["state"] == "succeeded"
        r = wc.post(f"/api/workers/job/{jid}/status", json=done)
        assert r.status_code == 200  # the same report again is acknowledged, not applied twice
        r = wc.post(f"/api/workers/job/{jid}/status", json={**done, "status": "failed"})
        assert r.status_code == 409
        got = c.get(f"/api/jobs/{jid}").json()
        assert got["state"] == "succeeded" and got["result"] == {"x": 1}
        assert c.get(f"/api/jobs/{jid}/logs").text == "hi\n"


def test_reports_in_one_call_are_each_taken_or_refused_on_their_own(coordinator):
    _, wc = register_worker(coordinator, slots=2)
    with coordinator.client() as c:
        a = c.post("/api/queue/submit", json={"command": ["true"]}).json()["id"]
        b = c.post("/api/queue/submit", json={"command": ["true"]}).json()["id"]
        next_event(wc), next_event(wc)  # both assigned
        done = {"attempt": 1, "status": "succeeded", "exit_code": 0, "result": {"x": 1}}
        batch = [
            {"job_id": a, "attempt": 1, "status": "running"},
            {"job_id": a, **done},
            {"job_id": b, **done, "attempt": 2},  # never assigned: stale
            {"job_id": "job_nope", **done},
            {"job_id": b, "attempt": 1, "status": "failed", "exit_code": 3},
            {"job_id": a, **done},  # the same end again: acknowledged, applied once
        ]
        r = wc.post("/api/workers/reports", json={"reports": batch})
        assert r.status_code == 200, r.text
        said = [(o["state"], (o["error"] or {}).get("code")) for o in r.json()["results"]]
        assert said == [("running", None), ("succeeded", None), (None, "stale_attempt"),
                        (None, "not_found"), ("failed", None), ("succeeded", None)]  # fmt: skip
        assert c.get(f"/api/jobs/{a}").json()["result"] == {"x": 1}
        assert c.get(f"/api/jobs/{b}").json()["exit_code"] == 3
        kinds = [e["kind"] for e in c.get(f"/api/jobs/{a}/events").json()["events"]]
        assert kinds.count("job.succeeded") == 1
        # The batch as a whole: bounded, and a bad report named by its place.
        r = wc.post("/api/workers/reports", json={"reports": [{**batch[0], "status": "lost"}]})
        assert r.status_code == 422 and r.json()["errors"][0]["field"].startswith("reports[0]")
        r = wc.post("/api/workers/reports", json={"reports": [batch[0]] * 501})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reports"
        assert wc.post("/api/workers/reports", json={"reports": []}).status_code == 422


def test_bad_requests_are_4xx_with_field(coordinator):
    with coordinator.client() as c:
        r = c.post("/api/queue/submit", json={"command": []})
        assert r.status_code == 422
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json")
        assert body["errors"][0]["field"] == "command"
        assert c.post("/api/queue/submit", content=b"{nope").status_code == 422
        assert c.post("/api/queue/submit", json={"command": ["x"], "bogus": 1}).status_code == 422
        assert c.get("/api/jobs/nope").status_code == 404
        assert c.get("/api/jobs", params={"state": "weird"}).status_code == 422
        assert c.get("/api/jobs", params={"cursor": "!!"}).status_code == 422
    with coordinator.client("wrong") as c:
        assert c.get("/api/jobs").status_code == 401
    r = httpx.post(
        coordinator.url + "/api/workers/heartbeat", json={}, headers={"X-Worker-Token": "nope"}
    )
    assert r.status_code == 401


def test_idempotent_submit(coordinator):
    with coordinator.client() as c:
        h = {"Idempotency-Key": "k1"}
        a = c.post("/api/queue/submit", json={"command": ["true"]}, headers=h)
        b = c.post("/api/queue/submit", json={"command": ["true"]}, headers=h)
        assert a.status_code == 201 and b.status_code == 200
        assert a.json()["id"] == b.json()["id"]


def test_cancel_queued_and_running(coordinator):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        j1 = c.post("/api/queue/submit", json={"command": ["sleep", "100"]}).json()
        ev = next_event(wc)
        assert ev["data"]["job_id"] == j1["id"]
        j2 = c.post("/api/queue/submit", json={"command": ["true"]}).json()
        assert c.post(f"/api/jobs/{j2['id']}/cancel").json()["state"] == "cancelled"
        assert c.post(f"/api/jobs/{j2['id']}/cancel").status_code == 409
        assert c.post(f"/api/jobs/{j1['id']}/cancel").json()["state"] == "cancelling"
        ev2 = next_event(wc, last_id=ev["id"])
        assert ev2["event"] == "job.cancel" and ev2["data"]["job_id"] == j1["id"]
        r = wc.post(
            f"/api/workers/job/{j1['id']}/status", json={"attempt": 1, "status": "cancelled"}
        )
        assert r.json()["state"] == "cancelled"


def test_disconnect_requeues(coordinator):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        j = c.post("/api/queue/submit", json={"command": ["sleep", "100"]}).json()
        next_event(wc)
        assert wc.post("/api/workers/disconnect").status_code == 204
        got = c.get(f"/api/jobs/{j['id']}").json()
        assert got["state"] == "queued" and got["worker_id"] is None
        r = wc.post(f"/api/workers/job/{j['id']}/status", json={"attempt": 1, "status": "running"})
        assert r.status_code == 409
        assert c.get("/api/admin/workers").json()["workers"][0]["status"] == "offline"


def test_worker_names_are_unique_per_tenant(coordinator):
    register_worker(coordinator, name="gpu-1")
    with coordinator.client() as c:
        r = c.post("/api/admin/workers", json={"name": "gpu-1"})
        assert r.status_code == 409 and r.json()["code"] == "already_exists"
        assert r.json()["errors"][0]["field"] == "name"


def test_follow_resumes_after_last_event_id(coordinator):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        jid = c.post("/api/queue/submit", json={"command": ["x"]}).json()["id"]
        next_event(wc)
        for seq, text in enumerate(["one\n", "two\n"]):
            wc.post(f"/api/workers/job/{jid}/logs", json={"attempt": 1, "seq": seq, "data": text})
        wc.post(f"/api/workers/job/{jid}/status", json={"attempt": 1, "status": "succeeded"})

        def follow(headers):
            got = []
            with c.stream("GET", f"/api/jobs/{jid}/logs", params={"follow": "true"},
                          headers=headers) as resp:  # fmt: skip
                for line in resp.iter_lines():
                    if line.startswith("id:"):
                        got.append(int(line[3:]))
                    elif line.startswith("event: end"):
                        return got
            return got

        ids = follow({})
        assert len(ids) == 2
        hub = coordinator.app.state.core.hub
        deadline = time.monotonic() + 5
        while len(hub.jobs):  # the server side of the stream winds down just after "end"
            assert time.monotonic() < deadline, "a finished follow left its wake-up behind"
            time.sleep(0.02)
        assert follow({"Last-Event-ID": str(ids[0])}) == ids[1:]
        bad = c.get(f"/api/jobs/{jid}/logs", params={"follow": "true"},
                    headers={"Last-Event-ID": "x"})  # fmt: skip
        assert bad.status_code == 422


def test_what_a_store_cannot_hold_is_refused_or_trimmed(coordinator):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        r = c.post("/api/queue/submit", json={"command": ["a" * 300]})
        assert r.status_code == 201 and len(r.json()["name"]) == 200
        assert (
            c.post("/api/queue/submit", json={"command": ["x"], "kind": "k" * 51}).status_code
            == 422
        )
        bad = b'{"command": ["\\ud800"]}'
        assert c.post("/api/queue/submit", content=bad,
                      headers={"Content-Type": "application/json"}).status_code == 422  # fmt: skip
        assert c.post("/api/queue/submit", json={"command": ["x\x00"]}).status_code == 422
        job = r.json()
        next_event(wc)
        nan = b'{"attempt": 1, "status": "succeeded", "result": {"x": NaN}}'
        r = wc.post(f"/api/workers/job/{job['id']}/status", content=nan,
                    headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 422
        r = wc.post(f"/api/workers/job/{job['id']}/logs",
                    json={"attempt": 1, "seq": 0, "data": "nul\x00 here"})  # fmt: skip
        assert r.status_code == 204
        assert c.get(f"/api/jobs/{job['id']}/logs").text == "nul\ufffd here"
