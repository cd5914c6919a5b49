"""A key holds at most follow_streams_per_key followed streams and long polls open at once;
a place comes back when its stream ends or its client goes."""

from __future__ import annotations

import time

import httpx
from harness import start_coordinator


def test_a_key_past_its_open_follows_is_answered_429_until_one_closes(tmp_path, db_url):
    coord, stop = start_coordinator(tmp_path / "c", db_url, follow_streams_per_key=2)
    try:
        with coord.client() as c:
            job = c.post("/api/queue/submit", json={"command": ["true"]}).json()["id"]  # no worker
            other = c.post("/api/admin/keys", json={"name": "other", "role": "viewer"}).json()
        headers = {"Authorization": f"Bearer {coord.admin_key}"}
        client = httpx.Client(base_url=coord.url, headers=headers, timeout=10)
        opened = [
            client.stream("GET", f"/api/jobs/{job}/logs", params={"follow": "true"}),
            client.stream("GET", f"/api/jobs/{job}/events", params={"follow": "true"}),
        ]
        streams = [o.__enter__() for o in opened]
        assert all(s.status_code == 200 for s in streams)
        r = client.get(f"/api/jobs/{job}/logs", params={"follow": "true"})
        assert r.status_code == 429 and "close one" in r.json()["detail"]
        r = client.post("/api/jobs/wait", json={"ids": [job], "timeout_s": 0})
        assert r.status_code == 429  # a long poll counts too
        with coord.client(other["key"]) as o:  # another key has its own places
            assert o.post("/api/jobs/wait", json={"ids": [job], "timeout_s": 0}).status_code == 200
        opened[0].__exit__(None, None, None)  # the client goes: its place comes back
        deadline = time.monotonic() + 10
        while True:
            r = client.post("/api/jobs/wait", json={"ids": [job], "timeout_s": 0})
            if r.status_code == 200:
                break
            assert r.status_code == 429 and time.monotonic() < deadline
            time.sleep(0.2)
        assert coord.app.state.core.follows.open_for(_key_id(coord)) == 1
        opened[1].__exit__(None, None, None)
        client.close()
    finally:
        stop()


def _key_id(coord):
    with coord.client() as c:
        return next(k["id"] for k in c.get("/api/admin/keys").json()["keys"]
                    if k["name"] == "bootstrap admin")  # fmt: skip
