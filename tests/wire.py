"""The worker protocol spoken by hand, for tests that play the worker's part exactly."""

from __future__ import annotations

import json

import httpx


def register_worker(coord, name="w1", labels=None, slots=1, persistent=True):
    with coord.client() as c:
        r = c.post(
            "/api/admin/workers",
            json={"name": name, "worker_type": "persistent", "labels": labels or {}},
        )
        assert r.status_code == 201, r.text
        created = r.json()
    h = {"X-Worker-Token": created["token"]}
    wc = httpx.Client(base_url=coord.url, headers=h, timeout=10)
    r = wc.post(
        "/api/workers/register", json={"hostname": "h", "slots": slots, "persistent": persistent}
    )
    assert r.status_code == 200, r.text
    return created, wc


def next_event(wc, last_id=None, timeout=10.0):
    headers = {"Last-Event-ID": str(last_id)} if last_id else {}
    with wc.stream("GET", "/api/workers/stream", headers=headers, timeout=timeout) as resp:
        assert resp.status_code == 200
        ev = {}
        for line in resp.iter_lines():
            if line.startswith("event:"):
                ev["event"] = line.split(":", 1)[1].strip()
            elif line.startswith("id:"):
                ev["id"] = int(line.split(":", 1)[1])
            elif line.startswith("data:"):
                ev["data"] = json.loads(line.split(":", 1)[1])
            elif line == "" and "data" in ev:
                return ev
    raise AssertionError("stream ended without an event")
