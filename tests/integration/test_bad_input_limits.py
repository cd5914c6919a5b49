"""Bad input at the edges of what the server can take is a 4xx naming the field, never a 500."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from wire import next_event, register_worker

from corral.protocol import MAX_NESTING

JSON = {"Content-Type": "application/json"}


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _body(template: dict, nested: str) -> str:
    """``template`` as JSON, with its "NESTED" value replaced by raw ``nested`` JSON."""
    return json.dumps(template).replace('"NESTED"', nested)


def _refused(r, field):
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == "invalid_input"
    assert [e["field"] for e in body["errors"]] == [field]


def test_deep_nesting_is_refused_naming_the_field(coordinator):
    _, wc = register_worker(coordinator)
    deep = _nested(500)  # parses, but deep enough to exhaust a recursive walk
    with coordinator.client() as c:
        submit = _body({"command": ["x"], "env": {"A": "NESTED"}}, deep)
        _refused(c.post("/api/queue/submit", content=submit, headers=JSON), "env.A")
        unknown = _body({"command": ["x"], "zz": "NESTED"}, deep)
        _refused(c.post("/api/queue/submit", content=unknown, headers=JSON), "zz")
        beat = _body({"running": "NESTED"}, deep)
        _refused(wc.post("/api/workers/heartbeat", content=beat, headers=JSON), "running[0]")
        labels = _body({"name": "w2", "labels": {"a": "NESTED"}}, deep)
        _refused(c.post("/api/admin/workers", content=labels, headers=JSON), "labels.a")

        job = c.post("/api/queue/submit", json={"command": ["x"]}).json()
        next_event(wc)
        report = {"attempt": 1, "status": "succeeded", "result": {"a": "NESTED"}}
        url = f"/api/workers/job/{job['id']}/status"
        _refused(wc.post(url, content=_body(report, deep), headers=JSON), "result")
        too_deep = _body(report, _nested(MAX_NESTING))  # one more level than allowed, with the dict
        _refused(wc.post(url, content=too_deep, headers=JSON), "result")
        at_cap = _body(report, _nested(MAX_NESTING - 1))
        r = wc.post(url, content=at_cap, headers=JSON)
        assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
        got = c.get(f"/api/jobs/{job['id']}/result").json()["result"]
        assert got == {"a": json.loads(_nested(MAX_NESTING - 1))}
        assert c.get("/healthz").status_code == 200


def test_body_too_deep_to_parse_is_refused(coordinator):
    with coordinator.client() as c:
        body = _body({"command": "NESTED"}, _nested(100_000))
        r = c.post("/api/queue/submit", content=body, headers=JSON)
        _refused(r, "body")
        assert "nested too deeply" in r.json()["detail"]
        _refused(c.post("/api/queue/submit", content=b'{"command": ["\xff"]}', headers=JSON),
                 "body")  # fmt: skip
        assert c.get("/healthz").status_code == 200


def test_nul_in_a_path_or_query_value_is_refused_naming_it(coordinator):
    # PostgreSQL cannot hold a NUL: this was a DataError (500) there and a 404 on SQLite.
    _, wc = register_worker(coordinator)
    text, quoted = "ab\x00cd", "ab%00cd"
    admin_calls = [
        ("GET", f"/api/jobs/{quoted}", {}, "job_id"),
        ("POST", f"/api/jobs/{quoted}/cancel", {}, "job_id"),
        ("GET", f"/api/jobs/{quoted}/result", {}, "job_id"),
        ("GET", f"/api/jobs/{quoted}/logs", {}, "job_id"),
        ("GET", "/api/jobs", {"worker_id": text}, "worker_id"),
        ("GET", "/api/jobs", {"cursor": text}, "cursor"),
        ("POST", f"/api/admin/workers/{quoted}/drain", {}, "worker_id"),
        ("DELETE", f"/api/admin/workers/{quoted}", {}, "worker_id"),
    ]
    with coordinator.client() as c:
        for method, path, params, field in admin_calls:
            _refused(c.request(method, path, params=params), field)
        # the same route with an ordinary unknown id still answers 404
        assert c.get("/api/jobs/abcd").status_code == 404
    worker_calls = [
        (f"/api/workers/job/{quoted}/status", {"attempt": 1, "status": "running"}),
        (f"/api/workers/job/{quoted}/logs", {"attempt": 1, "seq": 0, "data": "x"}),
    ]
    for path, body in worker_calls:
        _refused(wc.post(path, json=body), "job_id")


def test_an_idempotency_key_reused_with_another_request_is_refused(coordinator):
    key = {"Idempotency-Key": "sweep-1-trial-7"}
    with coordinator.client() as c:
        first = c.post("/api/queue/submit", json={"command": ["train", "--lr", "0.1"]}, headers=key)
        assert first.status_code == 201
        # The same request again (defaults spelled out or not) is the same job.
        same = {"command": ["train", "--lr", "0.1"], "gpus": 0}
        again = c.post("/api/queue/submit", json=same, headers=key)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        other = c.post("/api/queue/submit", json={"command": ["train", "--lr", "0.2"]}, headers=key)
        assert other.status_code == 422, other.text
        body = other.json()
        assert body["code"] == "idempotency_key_reused"
        assert body["errors"][0]["field"] == "Idempotency-Key"
        assert first.json()["id"] in body["detail"]
        assert len(c.get("/api/jobs").json()["jobs"]) == 1


def test_a_jobs_stored_log_is_capped_keeping_its_head_and_tail(tmp_path, db_url):
    from harness import start_coordinator

    coord, stop = start_coordinator(tmp_path / "s", db_url, job_log_max_bytes=1024 * 1024)
    try:
        _, wc = register_worker(coord)
        with coord.client() as c:
            job = c.post("/api/queue/submit", json={"command": ["x"]}).json()
            next_event(wc)
            for seq in range(40):  # 40 batches of 64 KiB: 2.5 MiB against a 1 MiB cap
                line = f"batch-{seq:03d} ".ljust(1023, ".") + "\n"
                body = {"attempt": 1, "seq": seq, "data": line * 64}
                r = wc.post(f"/api/workers/job/{job['id']}/logs", json=body)
                assert r.status_code == 204, r.text
                if seq == 39:  # a retried batch is stored once
                    assert (
                        wc.post(f"/api/workers/job/{job['id']}/logs", json=body).status_code == 204
                    )
            text = c.get(f"/api/jobs/{job['id']}/logs").text
    finally:
        stop()
    assert text.startswith("batch-000 ")
    assert text.rstrip().splitlines()[-1].startswith("batch-039 ")
    assert "bytes of output were cut here" in text
    assert 900 * 1024 < len(text.encode()) <= 1024 * 1024 + 500
    kept = [int(ln[6:9]) for ln in text.splitlines() if ln.startswith("batch-")]
    assert kept == sorted(kept) and kept.count(39) == 64  # the tail whole, in order, once
    assert 0 in kept and 20 not in kept  # the head kept, the middle gone


def test_a_request_body_past_the_limit_is_refused_before_it_is_read_whole(tmp_path, db_url):
    from harness import start_coordinator

    coord, stop = start_coordinator(tmp_path / "s", db_url, max_request_bytes=1024 * 1024)
    try:
        big = {"command": ["echo", "x" * (2 * 1024 * 1024)]}
        with coord.client() as c:
            r = c.post("/api/queue/submit", json=big)
            assert r.status_code == 413, r.text
            assert r.headers["content-type"].startswith("application/problem+json")
            body = r.json()
            assert body["code"] == "too_large" and body["errors"][0]["field"] == "body"
            assert str(1024 * 1024) in body["detail"]
            # Streamed without a length, it is cut off as it arrives, the same way.
            chunks = (b'{"command": ["' + b"x" * 65536 for _ in range(40))
            r = c.post("/api/queue/submit", content=chunks, headers=JSON)
            assert r.status_code == 413, r.text
            assert c.get("/api/jobs").json()["jobs"] == []  # nothing was queued
            ok = c.post("/api/queue/submit", json={"command": ["echo", "x" * 1000]})
            assert ok.status_code == 201, ok.text
    finally:
        stop()


def _begin_submit(s, key: str) -> None:
    """A submit's headers and the first byte of a body of 1,000 that never all comes."""
    head = (f"POST /api/queue/submit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")  # fmt: skip
    s.sendall(head.encode() + b"{")


def test_a_body_that_never_finishes_arriving_is_cut_off_with_408(tmp_path):
    import socket

    from harness import start_coordinator

    coord, stop = start_coordinator(tmp_path / "s", f"sqlite:///{tmp_path / 'c.db'}",
                                    body_timeout_s=1)  # fmt: skip
    try:
        host, port = coord.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            _begin_submit(s, coord.admin_key)
            started = time.monotonic()
            parts = [s.recv(65536)]
            waited = time.monotonic() - started
            while parts[-1]:  # the answer may come in several segments; then it closes
                parts.append(s.recv(65536))
            answer = b"".join(parts).decode()
        assert answer.startswith("HTTP/1.1 408"), answer
        assert "request_timeout" in answer and 0.5 < waited < 10
        with coord.client() as c:
            assert c.get("/api/jobs").json()["jobs"] == []
    finally:
        stop()


def test_a_body_that_arrives_a_byte_at_a_time_is_cut_off_at_its_deadline(tmp_path):
    import select
    import socket

    from harness import start_coordinator

    # Each byte comes well within the per-part timeout; the whole never comes in time.
    coord, stop = start_coordinator(tmp_path / "s", f"sqlite:///{tmp_path / 'c.db'}",
                                    body_timeout_s=1, body_deadline_s=2)  # fmt: skip
    try:
        host, port = coord.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            _begin_submit(s, coord.admin_key)
            started = time.monotonic()
            # A byte every 0.3 s until the answer is there (never once it is: a byte sent
            # after the server closed would reset the connection, and lose the answer).
            while time.monotonic() - started < 8 and not select.select([s], [], [], 0.3)[0]:
                s.sendall(b" ")
            waited = time.monotonic() - started
            parts = [s.recv(65536)]
            while parts[-1]:  # the answer may come in several segments; then it closes
                parts.append(s.recv(65536))
        text = b"".join(parts).decode()
        assert text.startswith("HTTP/1.1 408"), (text, waited)
        assert "request_timeout" in text and "within 2 s" in text and 1.5 < waited < 6
        with coord.client() as c:
            assert c.get("/api/jobs").json()["jobs"] == []
    finally:
        stop()


@pytest.mark.parametrize("first", [b"GET /api/jobs HTTP/1.1\r\nHost: x\r\n", b""])
def test_headers_that_arrive_a_byte_at_a_time_are_cut_off(tmp_path, first):
    """A slow-headers client: a byte of a header every 0.3 s, or nothing at all after it
    connects. Answered 408 and closed after the header timeout, while a normal request on
    another connection, and a keep-alive connection's second request, are answered."""
    import select
    import socket

    from harness import start_coordinator

    coord, stop = start_coordinator(tmp_path / "s", f"sqlite:///{tmp_path / 'c.db'}",
                                    header_timeout_s=1.5)  # fmt: skip
    try:
        host, port = coord.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(first)
            started = time.monotonic()
            while time.monotonic() - started < 8 and not select.select([s], [], [], 0.3)[0]:
                if first:
                    s.sendall(b"X")
            waited = time.monotonic() - started
            parts = [s.recv(65536)]
            while parts[-1]:
                parts.append(s.recv(65536))
        text = b"".join(parts).decode()
        assert text.startswith("HTTP/1.1 408") and "headers took too long" in text, text
        assert 1.0 < waited < 5, waited
        with httpx.Client(base_url=coord.url, timeout=10) as h:  # kept alive past the timeout
            assert h.get("/healthz").status_code == 200
            time.sleep(2)
            assert h.get("/healthz").status_code == 200
    finally:
        stop()


def test_a_result_past_its_cap_is_refused_naming_it(coordinator):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"]}).json()
        next_event(wc)
        big = {"attempt": 1, "status": "succeeded", "exit_code": 0,
               "result": {"blob": "é" * 600_000}}  # 1.2 MB of UTF-8  # fmt: skip
        r = wc.post(f"/api/workers/job/{job['id']}/status", json=big)
        _refused(r, "result")
        r = wc.post("/api/workers/reports", json={"reports": [{"job_id": job["id"], **big}]})
        _refused(r, "reports[0].result")
        assert c.get(f"/api/jobs/{job['id']}").json()["state"] == "assigned"  # nothing taken


def test_environment_and_label_counts_and_sizes_are_capped(coordinator):
    with coordinator.client() as c:
        many = {f"V{i}": "x" for i in range(257)}
        _refused(c.post("/api/queue/submit", json={"command": ["x"], "env": many}), "env")
        big = {"V": "x" * (64 * 1024 + 1)}
        _refused(c.post("/api/queue/submit", json={"command": ["x"], "env": big}), "env.V")
        labels = {f"k{i}": "*" for i in range(65)}
        _refused(c.post("/api/queue/submit", json={"command": ["x"], "worker_labels": labels}),
                 "worker_labels")  # fmt: skip
        ok = c.post("/api/queue/submit", json={"command": ["x"], "env": {"V": "x" * 1000}})
        assert ok.status_code == 201, ok.text


def test_an_ended_attempts_output_closes_after_its_grace(coordinator):
    from datetime import timedelta

    from sqlalchemy import update

    from corral.store.tables import attempts

    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"]}).json()["id"]
        next_event(wc)
        done = {"attempt": 1, "status": "succeeded", "exit_code": 0}
        assert wc.post(f"/api/workers/job/{job}/status", json=done).status_code == 200
        late = {"attempt": 1, "seq": 0, "data": "shipped after the end\n"}
        assert wc.post(f"/api/workers/job/{job}/logs", json=late).status_code == 204
        core = coordinator.app.state.core

        async def long_ago():
            async with core.store.tx() as conn:
                then = core.clock.now() - timedelta(minutes=20)
                await conn.execute(update(attempts).where(attempts.c.job_id == job)
                                   .values(finished_at=then))  # fmt: skip

        coordinator.call(long_ago())
        later = {"attempt": 1, "seq": 1, "data": "rewritten history\n"}
        r = wc.post(f"/api/workers/job/{job}/logs", json=later)
        assert r.status_code == 409 and "closed" in r.json()["detail"]
        text = c.get(f"/api/jobs/{job}/logs").text
    assert "shipped after the end" in text and "rewritten" not in text
