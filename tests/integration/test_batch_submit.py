"""POST /api/queue/submit-batch and POST /api/jobs/wait against a real coordinator, on both
stores: one transaction, one cause, one wake-up of the dispatcher, idempotency per job."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from wire import next_event, register_worker

from corral.protocol import MAX_BATCH
from corral.server import batch
from corral.store import jobs as jobs_q


def _batch(c: Any, jobs: list[dict[str, Any]], **kw: Any) -> Any:
    return c.post("/api/queue/submit-batch", json={"jobs": jobs}, **kw)


def _count_jobs(c: Any) -> int:
    return len(c.get("/api/jobs", params={"limit": 1000}).json()["jobs"])


def test_a_batch_is_one_transaction_with_one_cause_and_one_wake_up(clocked):
    coord, _ = clocked
    core = coord.app.state.core
    kicks: list[int] = []
    kick = core.kick_dispatcher
    core.kick_dispatcher = lambda: (kicks.append(1), kick())[1]
    try:
        with coord.client() as c:
            r = _batch(c, [{"command": ["true"]}, {"kind": "call", "call": {"target": "m:f"}},
                           {"command": ["echo", "3"], "name": "third"}],
                       headers={"X-Request-ID": "req-batch-1"})  # fmt: skip
            assert r.status_code == 201, r.text
            body = r.json()
            jobs = body["jobs"]
            assert body["created"] == [True, True, True]
            assert [j["name"] for j in jobs] == ["true", "f", "third"]
            assert jobs[1]["kind"] == "call" and jobs[1]["command"] == []
            assert jobs[1]["call"] == {"target": "m:f", "pickled": None, "args": [], "kwargs": {}}
            assert len({j["created_at"] for j in jobs}) == 1  # one transaction, one moment
            for j in jobs:
                (submitted,) = c.get(f"/api/jobs/{j['id']}/events").json()["events"]
                assert submitted["kind"] == "job.submitted"
                assert submitted["cause"] == "req-batch-1"
                assert submitted["actor"].startswith("key_")
    finally:
        core.kick_dispatcher = kick
    assert len(kicks) == 1


def test_a_bad_item_is_a_422_naming_its_path_and_nothing_is_queued(clocked):
    coord, _ = clocked
    with coord.client() as c:
        good = {"command": ["true"]}
        items = [good, good, good, {"kind": "command"}, {"kind": "call", "command": ["x"]}]
        r = _batch(c, items)
        assert r.status_code == 422, r.text
        fields = {e["field"]: e["message"] for e in r.json()["errors"]}
        assert "jobs[3].command" in fields
        assert "jobs[4].command" in fields and "jobs[4].call" in fields
        r = _batch(c, [good, {"command": ["true"], "call": {"target": "m:f"}}])
        assert [e["field"] for e in r.json()["errors"]] == ["jobs[1].call"]
        r = _batch(c, [{"kind": "call", "call": {"target": "not a target"}}])
        assert [e["field"] for e in r.json()["errors"]] == ["jobs[0].call.target"]
        assert _count_jobs(c) == 0


def test_the_count_is_capped_and_the_cap_is_named(clocked):
    coord, _ = clocked
    with coord.client() as c:
        r = _batch(c, [{"command": ["true"]}] * (MAX_BATCH + 1))
        assert r.status_code == 422
        (err,) = r.json()["errors"]
        assert err["field"] == "jobs" and str(MAX_BATCH) in err["message"]
        assert _batch(c, []).json()["errors"][0]["field"] == "jobs"
        assert _count_jobs(c) == 0


def test_idempotency_keys_per_job_work_as_the_single_submits_header(clocked):
    coord, _ = clocked
    with coord.client() as c:
        single = c.post("/api/queue/submit", json={"command": ["true"]},
                        headers={"Idempotency-Key": "k-single"})  # fmt: skip
        assert single.status_code == 201
        items = [
            {"command": ["true"], "idempotency_key": "k-single"},  # the single submit's job
            {"command": ["echo", "a"], "idempotency_key": "k-a"},
            {"command": ["echo", "a"], "idempotency_key": "k-a"},  # twice in one batch
            {"command": ["echo", "b"]},
        ]
        first = _batch(c, items).json()
        ids = [j["id"] for j in first["jobs"]]
        assert first["created"] == [False, True, False, True]
        assert ids[0] == single.json()["id"] and ids[1] == ids[2]
        again = _batch(c, items).json()
        assert again["created"] == [False, False, False, True]
        assert [j["id"] for j in again["jobs"]][:3] == ids[:3]
        # The same key is the same request by either route.
        replay = c.post("/api/queue/submit", json={"command": ["echo", "a"]},
                        headers={"Idempotency-Key": "k-a"})  # fmt: skip
        assert replay.status_code == 200 and replay.json()["id"] == ids[1]
        # A key reused for another request is refused, and names the item.
        r = _batch(c, [{"command": ["true"]}, {"command": ["false"], "idempotency_key": "k-a"}])
        assert r.status_code == 422
        assert r.json()["code"] == "idempotency_key_reused"
        assert r.json()["errors"][0]["field"] == "jobs[1].idempotency_key"
        r = _batch(c, [{"command": ["true"], "idempotency_key": "k-new"},
                       {"command": ["false"], "idempotency_key": "k-new"}])  # fmt: skip
        assert r.json()["errors"][0]["field"] == "jobs[1].idempotency_key"
        assert _count_jobs(c) == 4


def test_wait_answers_once_one_has_ended(clocked):
    coord, _ = clocked
    _, wc = register_worker(coord)
    with coord.client() as c:
        jobs = _batch(c, [{"command": ["true"]}, {"command": ["true"]}]).json()["jobs"]
        ids = [j["id"] for j in jobs]
        r = c.post("/api/jobs/wait", json={"ids": ids, "timeout_s": 0})
        assert r.status_code == 200 and r.json() == {"jobs": [], "pending": ids}
        ev = next_event(wc)["data"]
        assert "call" not in ev  # a command job's event is as before call jobs
        wc.post(f"/api/workers/job/{ev['job_id']}/status", json={"attempt": 1, "status": "running"})
        done = wc.post(f"/api/workers/job/{ev['job_id']}/status",
                       json={"attempt": 1, "status": "succeeded", "exit_code": 0})  # fmt: skip
        assert done.status_code == 200, done.text
        r = c.post("/api/jobs/wait", json={"ids": ids, "timeout_s": 10}).json()
        assert [j["id"] for j in r["jobs"]] == [ev["job_id"]]
        assert r["pending"] == [i for i in ids if i != ev["job_id"]]
        missing = c.post("/api/jobs/wait", json={"ids": ["job_nope"]})
        assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "ids"
        over = c.post("/api/jobs/wait", json={"ids": ids, "timeout_s": 61})
        assert over.status_code == 422 and over.json()["errors"][0]["field"] == "timeout_s"


_WOKEN_S = 4  # a wait's timeout_s is 8: a lost wake-up answers only then


def test_concurrent_waits_on_overlapping_jobs_each_get_their_ends(clocked, monkeypatch):
    """Two long polls share a job: each is woken by the jobs it asked for, the shared one
    included, and none by the polling fallback (set past the waits' own timeout) or by the
    reading of all at that timeout (an answer comes well before it)."""
    coord, _ = clocked
    core = coord.app.state.core
    monkeypatch.setattr(batch, "_FALLBACK_S", 60.0)

    async def watched() -> int:
        return len(core.hub.jobs)

    def until_watched(n: int) -> None:
        deadline = time.monotonic() + 5
        while coord.call(watched()) < n:
            assert time.monotonic() < deadline, "the waits never started watching"
            time.sleep(0.01)

    with coord.client() as c, ThreadPoolExecutor(2) as pool:
        a, b, c_ = [j["id"] for j in _batch(c, [{"command": ["true"]}] * 3).json()["jobs"]]

        def wait(ids: list[str]) -> Any:
            with coord.client() as own:
                return own.post("/api/jobs/wait", json={"ids": ids, "timeout_s": 8}).json()

        left, right = pool.submit(wait, [a, b]), pool.submit(wait, [b, c_])
        until_watched(3)  # a, b and c: both waits are in
        assert c.post(f"/api/jobs/{b}/cancel").status_code == 200
        assert [j["id"] for j in left.result(_WOKEN_S)["jobs"]] == [b]
        assert [j["id"] for j in right.result(_WOKEN_S)["jobs"]] == [b]
        assert left.result()["pending"] == [a] and right.result()["pending"] == [c_]
        # One woken by a job the other does not wait for: the other waits on, and is woken
        # by its own job later.
        right = pool.submit(wait, [c_])
        until_watched(1)
        left = pool.submit(wait, [a, c_])
        until_watched(2)
        assert c.post(f"/api/jobs/{a}/cancel").status_code == 200
        assert left.result(_WOKEN_S) == {"jobs": left.result()["jobs"], "pending": [c_]}
        assert [j["id"] for j in left.result()["jobs"]] == [a] and not right.done()
        assert c.post(f"/api/jobs/{c_}/cancel").status_code == 200
        assert [j["id"] for j in right.result(_WOKEN_S)["jobs"]] == [c_]


def test_the_states_of_a_batch_read_in_one_statement_are_the_tenants_only(clocked):
    coord, _ = clocked
    core = coord.app.state.core
    with coord.client() as c:
        ids = [j["id"] for j in _batch(c, [{"command": ["true"]}] * MAX_BATCH).json()["jobs"]]
        assert c.post(f"/api/jobs/{ids[7]}/cancel").status_code == 200

    async def read(tenant_id: str, wanted: list[str], states: list[str] | None = None) -> Any:
        async with core.store.tx() as conn:
            return (await jobs_q.states_of(conn, tenant_id, wanted, states),
                    set(await jobs_q.of_tenant(conn, tenant_id, wanted)))  # fmt: skip

    async def tenant() -> str:
        async with core.store.tx() as conn:
            return str((await jobs_q.by_ids(conn, ids[:1]))[0]["tenant_id"])

    mine = coord.call(tenant())
    states, rows = coord.call(read(mine, [*ids, "job_nope"]))
    assert set(states) == rows == set(ids) and states[ids[7]] == "cancelled"
    assert coord.call(read(mine, ids, ["cancelled"]))[0] == {ids[7]: "cancelled"}
    assert coord.call(read("tenant_other", ids)) == ({}, set())
    assert coord.call(read(mine, [])) == ({}, set())
