"""The blob and artifact routes at the wire: uploads named by their hash, capped, scoped by
tenant; a worker's checkpoint taken only for an attempt it holds, and handed to the next."""

from __future__ import annotations

import hashlib
import json

import pytest
from harness import start_coordinator
from wire import next_event, register_worker

OCTETS = {"Content-Type": "application/octet-stream"}


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _problem(r, status, field):
    assert r.status_code == status, r.text
    assert [e["field"] for e in r.json()["errors"]] == [field], r.text


def test_a_blob_is_taken_once_under_its_own_hash(coordinator):
    data = b"a packed directory"
    with coordinator.client() as c:
        assert c.head(f"/api/blobs/{_digest(data)}").status_code == 404
        r = c.put(f"/api/blobs/{_digest(data)}", content=data, headers=OCTETS)
        assert r.status_code == 201 and r.json() == {"digest": _digest(data), "size": len(data),
                                                     "created": True}  # fmt: skip
        again = c.put(f"/api/blobs/{_digest(data)}", content=data, headers=OCTETS)
        assert again.status_code == 200 and again.json()["created"] is False
        head = c.head(f"/api/blobs/{_digest(data)}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        _problem(c.put(f"/api/blobs/{_digest(b'other')}", content=data), 422, "body")
        _problem(c.put("/api/blobs/not-a-digest", content=data), 422, "digest")
        assert c.head(f"/api/blobs/{_digest(b'other')}").status_code == 404  # nothing kept


def test_a_job_names_a_directory_its_tenant_uploaded(coordinator):
    data = b"tenant A's directory"
    with coordinator.client() as op:
        b = op.post("/api/admin/tenants", json={"name": "B"}).json()
        assert op.put(f"/api/blobs/{_digest(data)}", content=data).status_code == 201
        job = op.post("/api/queue/submit", json={"command": ["x"], "workdir": _digest(data)})
        assert job.status_code == 201 and job.json()["workdir"] == _digest(data)
        missing = {"command": ["x"], "workdir": _digest(b"never uploaded")}
        _problem(op.post("/api/queue/submit", json=missing), 422, "workdir")
        batch = {"jobs": [{"command": ["x"]}, missing]}
        _problem(op.post("/api/queue/submit-batch", json=batch), 422, "workdir")
        call = {"kind": "call", "call": {"target": "m:f"}, "workdir": _digest(data)}
        _problem(op.post("/api/queue/submit", json=call), 422, "workdir")
    with coordinator.client(b["api_key"]) as other:  # another tenant cannot name A's blob
        body = {"command": ["x"], "workdir": _digest(data)}
        _problem(other.post("/api/queue/submit", json=body), 422, "workdir")
        assert other.head(f"/api/blobs/{_digest(data)}").status_code == 404


def test_an_upload_past_the_cap_is_refused_before_it_is_read(tmp_path, db_url):
    coord, stop = start_coordinator(tmp_path, db_url, blob_max_bytes=1024 * 1024)
    try:
        big = b"x" * (1024 * 1024 + 1)
        with coord.client() as c:
            _problem(c.put(f"/api/blobs/{_digest(big)}", content=big), 413, "body")
            # A JSON request keeps its own, smaller cap: only uploads get the blob cap.
            small = b"y" * (512 * 1024)
            assert c.put(f"/api/blobs/{_digest(small)}", content=small).status_code == 201
    finally:
        stop()


def test_a_checkpoint_is_stored_only_for_the_attempt_a_worker_holds(coordinator):
    data = b"model state at step 5"
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"], "max_retries": 2}).json()
        first = next_event(wc)
        assert first["data"]["attempt"] == 1
        url = f"/api/workers/job/{job['id']}"
        assert wc.get(f"{url}/checkpoint", params={"attempt": 1}).status_code == 204
        put = wc.put(f"{url}/checkpoints/{_digest(data)}", content=data,
                     params={"attempt": 1, "step": 5, "name": "model"})  # fmt: skip
        assert put.status_code == 201, put.text
        assert (put.json()["step"], put.json()["kind"]) == (5, "checkpoint")
        # An attempt it does not hold: refused, nothing stored.
        stale = wc.put(f"{url}/checkpoints/{_digest(data)}", content=data,
                       params={"attempt": 2, "step": 9})  # fmt: skip
        assert stale.status_code == 409, stale.text
        listed = c.get(f"/api/jobs/{job['id']}/artifacts").json()["artifacts"]
        assert [(a["name"], a["step"], a["attempt"]) for a in listed] == [("model", 5, 1)]
        got = c.get(f"/api/jobs/{job['id']}/artifacts/{listed[0]['id']}")
        assert got.content == data and got.headers["x-content-sha256"] == _digest(data)
        events = c.get(f"/api/jobs/{job['id']}/events").json()["events"]
        checkpointed = [e for e in events if e["kind"] == "job.checkpointed"]
        assert checkpointed[0]["detail"]["step"] == 5 and checkpointed[0]["attempt"] == 1
        # The attempt is lost; the next one is handed the checkpoint.
        lost = wc.post(f"{url}/status", json={"attempt": 1, "status": "declined", "error": "x"})
        assert lost.status_code == 200, lost.text
        # The ended attempt stores nothing more (a step of 2**62 would win every resume).
        late = wc.put(f"{url}/checkpoints/{_digest(data)}", content=data,
                      params={"attempt": 1, "step": 2**62})  # fmt: skip
        assert late.status_code == 409, late.text
        again = next_event(wc, first["id"], timeout=15)
        assert again["data"]["attempt"] == 2
        resume = wc.get(f"{url}/checkpoint", params={"attempt": 2})
        assert resume.status_code == 200 and resume.content == data
        assert json.loads(resume.headers["x-corral-artifact"])["step"] == 5


@pytest.mark.parametrize("name", ["a/b", "..", "x" * 301])
def test_a_checkpoint_name_is_one_path_part(coordinator, name):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"]}).json()
        next_event(wc)
    r = wc.put(f"/api/workers/job/{job['id']}/checkpoints/{_digest(b'x')}", content=b"x",
               params={"attempt": 1, "step": 1, "name": name})  # fmt: skip
    _problem(r, 422, "name" if len(name) <= 300 else "query.name")


def _logs(wc, job_id, seq, text):
    r = wc.post(f"/api/workers/job/{job_id}/logs", json={"attempt": 1, "seq": seq, "data": text})
    assert r.status_code == 204, r.text


def test_reported_metrics_come_back_as_series_once_each(tmp_path, db_url):
    coord, stop = start_coordinator(tmp_path, db_url, metric_points_max=5)
    try:
        _, wc = register_worker(coord)
        with coord.client() as c:
            job = c.post("/api/queue/submit", json={"command": ["x"]}).json()
            next_event(wc)
            text = ('epoch 0\ncorral.metric {"step":0,"loss":1.5,"acc":0.5}\n'
                    'corral.metric {"step":1,"loss":null,"acc":0.75}\n')  # fmt: skip
            _logs(wc, job["id"], 0, text)
            _logs(wc, job["id"], 0, text)  # the same batch again: stored once
            got = c.get(f"/api/jobs/{job['id']}/metrics").json()
            series = {s["name"]: [(p["step"], p["value"]) for p in s["points"]]
                      for s in got["series"]}  # fmt: skip
            assert series == {"loss": [(0, 1.5), (1, None)], "acc": [(0, 0.5), (1, 0.75)]}
            only = c.get(f"/api/jobs/{job['id']}/metrics", params={"name": "acc"}).json()
            assert [s["name"] for s in only["series"]] == ["acc"]
            # Past the job's cap, points stay in its log only.
            _logs(wc, job["id"], 1, 'corral.metric {"step":2,"loss":1,"acc":1}\n' * 3)
            got = c.get(f"/api/jobs/{job['id']}/metrics").json()
            assert sum(len(s["points"]) for s in got["series"]) == 5
            assert "corral.metric" in c.get(f"/api/jobs/{job['id']}/logs").text
            bad = c.get(f"/api/jobs/{job['id']}/metrics", params={"cursor": "x"})
            _problem(bad, 422, "cursor")
    finally:
        stop()


@pytest.mark.parametrize(("requirements", "field"), [
    ([], "requirements"),
    (["ok==1", "two\nlines"], "requirements[1]"),
    (["x" * 1001], "requirements[0]"),
    ([f"p{i}" for i in range(501)], "requirements"),
])  # fmt: skip
def test_requirements_are_lines_within_their_caps(coordinator, requirements, field):
    with coordinator.client() as c:
        r = c.post("/api/queue/submit", json={"command": ["x"], "requirements": requirements})
        _problem(r, 422, field)
        call = {"kind": "call", "call": {"target": "m:f"}, "requirements": ["numpy"]}
        _problem(c.post("/api/queue/submit", json=call), 422, "requirements")
        ok = c.post("/api/queue/submit", json={"command": ["x"], "requirements": ["numpy<3"]})
        assert ok.status_code == 201 and ok.json()["requirements"] == ["numpy<3"]


def test_params_are_a_json_object_within_its_cap(coordinator):
    with coordinator.client() as c:
        for bad in ([1, 2], "x", {"a": "y" * (64 * 1024)}):
            r = c.post("/api/queue/submit", json={"command": ["x"], "params": bad})
            _problem(r, 422, "params")
        nan = '{"command": ["x"], "params": {"lr": NaN}}'
        r = c.post("/api/queue/submit", content=nan, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        ok = c.post("/api/queue/submit", json={"command": ["m:f"], "kind": "train",
                                                 "params": {"lr": 0.1}})  # fmt: skip
        assert ok.status_code == 201 and ok.json()["params"] == {"lr": 0.1}


@pytest.mark.parametrize(
    ("name", "status"),
    [("model/w.bin", 201), ("../w.bin", 422), ("a//b", 422), ("./w", 422), ("a/..", 422)],
)
def test_an_output_is_named_by_its_path_in_the_jobs_directory(coordinator, name, status):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"]}).json()
        next_event(wc)
    r = wc.put(f"/api/workers/job/{job['id']}/outputs/{_digest(b'w')}", content=b"w",
               params={"attempt": 1, "name": name})  # fmt: skip
    assert r.status_code == status, r.text
    if status == 201:
        assert (r.json()["kind"], r.json()["step"]) == ("output", None)


def test_an_output_named_in_any_script_downloads(coordinator):
    _, wc = register_worker(coordinator)
    with coordinator.client() as c:
        job = c.post("/api/queue/submit", json={"command": ["x"]}).json()
        next_event(wc)
        name = 'résultats/模型 "v1".bin'
        r = wc.put(f"/api/workers/job/{job['id']}/outputs/{_digest(b'w')}", content=b"w",
                   params={"attempt": 1, "name": name})  # fmt: skip
        assert r.status_code == 201, r.text
        got = c.get(f"/api/jobs/{job['id']}/artifacts/{r.json()['id']}")
        assert got.status_code == 200 and got.content == b"w"
        assert "filename*=UTF-8''r%C3%A9sultats%2F" in got.headers["content-disposition"]
