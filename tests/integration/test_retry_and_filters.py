"""Retrying an ended job, and listing jobs by a part of their name and by the worker labels
they ask for: through the API, the Python client and the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
from harness import Coordinator

from corral.client import Client, Conflict, InvalidInput


def _client(c: Coordinator) -> Client:
    return Client(c.url, c.admin_key, timeout=10)


def test_an_ended_job_runs_again_as_a_new_job_with_its_request(coordinator: Coordinator) -> None:
    with _client(coordinator) as client:
        job = client.submit(["python", "train.py"], name="train", labels={"pool": "a100"},
                            gpus=0, retries=5, timeout=30, env={"SEED": "7"})  # fmt: skip
        try:
            client.retry(job.id)
            raise AssertionError("a queued job was retried")
        except Conflict as exc:
            assert "only an ended job" in str(exc)
        client.cancel(job.id)
        again = client.retry(job.id)
        assert again.id != job.id and again.state == "queued"
        same = ("name", "command", "worker_labels", "max_retries", "timeout_s", "kind")
        assert {f: getattr(again, f) for f in same} == {f: getattr(job, f) for f in same}
        (submitted,) = [e for e in client.events(again.id) if e.kind == "job.submitted"]
        assert submitted.detail["retry_of"] == job.id
        assert client.job(job.id).state == "cancelled"  # the first stays as it ended
    with coordinator.client() as h:
        assert h.post("/api/jobs/job_nope/retry").status_code == 404


def test_jobs_are_listed_by_a_part_of_their_name_and_by_their_labels(
    coordinator: Coordinator,
) -> None:
    with _client(coordinator) as client:
        a = client.submit(["true"], name="resnet-50_sweep", labels={"pool": "a100"})
        b = client.submit(["true"], name="resnet-18", labels={"pool": "h100", "zone": "eu"})
        c = client.submit(["true"], name="bert%large", labels={"pool": "a100"})
        ids = lambda **kw: {j.id for j in client.jobs(**kw)}  # noqa: E731
        assert ids(name="resnet") == {a.id, b.id}
        assert ids(name="50_s") == {a.id}  # _ and % are taken as themselves
        assert ids(name="t%l") == {c.id}
        assert ids(name="_") == {a.id}
        assert ids(labels={"pool": "a100"}) == {a.id, c.id}
        assert ids(labels={"pool": "h100", "zone": "eu"}) == {b.id}
        assert ids(name="resnet", labels={"pool": "a100"}) == {a.id}
        assert ids(labels={"pool": "none"}) == set()
    with coordinator.client() as h:
        r = h.get("/api/jobs", params={"label": "no-equals-sign"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "label"
        assert h.get("/api/jobs", params={"name": "x" * 201}).status_code == 422
    try:
        with _client(coordinator) as client:
            list(client.jobs(labels={"": "x"}))
        raise AssertionError("an empty label key was taken")
    except InvalidInput:
        pass


def test_a_tenants_listing_and_retry_stay_in_the_tenant(coordinator: Coordinator) -> None:
    with coordinator.client() as op:
        t = op.post("/api/admin/tenants", json={"name": "other"}).json()
        mine = op.post("/api/queue/submit", json={"command": ["true"], "name": "mine"}).json()
        op.post(f"/api/jobs/{mine['id']}/cancel")
    with httpx.Client(base_url=coordinator.url,
                      headers={"Authorization": f"Bearer {t['api_key']}"}) as h:  # fmt: skip
        assert h.get("/api/jobs", params={"name": "mine"}).json()["jobs"] == []
        assert h.post(f"/api/jobs/{mine['id']}/retry").status_code == 404
