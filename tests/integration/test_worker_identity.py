"""The admin decides what a worker is: a worker's register cannot change the name or the
labels its admin gave it, nor set labels its admin did not allow (it would receive jobs,
and their secrets, meant for others)."""

from __future__ import annotations

import httpx


def _create(coord, **body):
    with coord.client() as c:
        r = c.post("/api/admin/workers", json={"worker_type": "persistent", **body})
        assert r.status_code == 201, r.text
        return r.json()


def _register(coord, created, **body):
    h = {"X-Worker-Token": created["token"]}
    with httpx.Client(base_url=coord.url, headers=h, timeout=10) as wc:
        return wc.post("/api/workers/register", json={"hostname": "h", "slots": 1, **body})


def _field(r):
    return [e["field"] for e in r.json()["errors"]]


def _worker(coord, worker_id):
    with coord.client() as c:
        return c.get(f"/api/admin/workers/{worker_id}").json()


def test_a_worker_cannot_change_a_label_its_admin_set(coordinator):
    created = _create(coordinator, name="cpu-1", labels={"gpu": "none"})
    r = _register(coordinator, created, labels={"gpu": "h100"})
    assert r.status_code == 403, r.text
    assert _field(r) == ["labels.gpu"] and "set by the worker's admin" in r.json()["detail"]
    # Saying the same value is fine (a worker started with the labels it was created with).
    assert _register(coordinator, created, labels={"gpu": "none"}).status_code == 200
    assert _worker(coordinator, created["id"])["labels"] == {"gpu": "none"}


def test_a_worker_sets_only_the_labels_its_admin_allowed(coordinator):
    plain = _create(coordinator, name="plain")
    r = _register(coordinator, plain, labels={"zone": "eu"})
    assert (r.status_code, _field(r)) == (403, ["labels.zone"]), r.text

    created = _create(coordinator, name="box", labels={"team": "nlp"},
                      allow_labels=["zone", "rack-*"])  # fmt: skip
    assert _worker(coordinator, created["id"])["allowed_labels"] == ["zone", "rack-*"]
    r = _register(coordinator, created, labels={"zone": "eu", "rack-row": "3"})
    assert r.status_code == 200, r.text
    assert _worker(coordinator, created["id"])["labels"] == {
        "team": "nlp", "zone": "eu", "rack-row": "3"
    }  # fmt: skip
    # What a worker said last time is not kept as its admin's: said no more, it is gone.
    assert _register(coordinator, created, labels={}).status_code == 200
    assert _worker(coordinator, created["id"])["labels"] == {"team": "nlp"}
    r = _register(coordinator, created, labels={"gpu": "a100"})
    assert (r.status_code, _field(r)) == (403, ["labels.gpu"])


def test_a_worker_keeps_the_name_its_admin_gave_it(coordinator):
    created = _create(coordinator, name="gpu-box-1")
    r = _register(coordinator, created, name="someone-else", hostname="node7")
    assert r.status_code == 200 and r.json()["name"] == "gpu-box-1", r.text
    got = _worker(coordinator, created["id"])
    assert (got["name"], got["hostname"]) == ("gpu-box-1", "node7")


def test_a_label_claimed_by_a_worker_does_not_route_jobs_to_it(coordinator):
    # The attack: a worker claims the label of the GPU pool to receive its jobs.
    created = _create(coordinator, name="intruder")
    assert _register(coordinator, created, labels={"pool": "secret-gpus"}).status_code == 403
    assert _worker(coordinator, created["id"])["labels"] == {}


def test_label_counts_are_capped(coordinator):
    with coordinator.client() as c:
        many = {f"k{i}": "v" for i in range(65)}
        r = c.post("/api/admin/workers", json={"name": "many", "labels": many})
    assert r.status_code == 422 and _field(r) == ["labels"], r.text
