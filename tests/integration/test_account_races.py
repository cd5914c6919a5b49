"""Accounts meeting each other: a tenant suspended while its workers register (no worker of
it stays online, no job of a suspended tenant is handed to a worker), and two onboardings or
two keys of one name (the second is told the name is taken), whatever order the
transactions meet in. The races need two writers: PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from harness import Coordinator, fresh_database, start_coordinator
from harness_e2e import wait_until
from sqlalchemy import select, update

from corral.store.tables import jobs, tenants, workers


def _onboard(coord: Coordinator) -> dict[str, Any]:
    with coord.client() as op:
        r = op.post("/api/admin/tenants", json={"name": "Acme"})
    assert r.status_code == 201, r.text
    return r.json()


def _workers(coord: Coordinator, key: str, n: int) -> list[httpx.Client]:
    out = []
    with coord.client(key) as admin:
        for i in range(n):
            r = admin.post("/api/admin/workers", json={"name": f"w{i}"})
            assert r.status_code == 201, r.text
            out.append(httpx.Client(base_url=coord.url, timeout=30,
                                    headers={"X-Worker-Token": r.json()["token"]}))  # fmt: skip
    return out


def _store(coord: Coordinator, *statements: Any, read: Any = None) -> Any:
    """Run ``statements`` in one transaction of the coordinator's store, then ``read``."""

    async def go() -> Any:
        async with coord.app.state.core.store.tx() as conn:
            for s in statements:
                await conn.execute(s)
            return (await conn.execute(read)).all() if read is not None else None

    return coord.call(go())


REGISTER = {"hostname": "h", "slots": 1, "persistent": True}


def _waiting(url: str) -> int:
    """How many of the database's statements wait for a lock."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as look:
        [(n,)] = look.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchall()
    return int(n)


def _in_thread(fn: Any, answers: dict[str, Any], name: str) -> threading.Thread:
    def run() -> None:
        answers[name] = fn()

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.mark.postgres
def test_a_suspension_meeting_registers_leaves_none_of_its_workers_online(tmp_path):
    import psycopg

    with fresh_database("postgres", tmp_path) as url:
        coord, stop = start_coordinator(tmp_path / "s", url)
        clients: list[httpx.Client] = []
        try:
            acme = _onboard(coord)
            tid = acme["tenant_id"]
            clients = _workers(coord, acme["api_key"], 4)
            for wc in clients[:2]:  # two are online already, two come now
                assert wc.post("/api/workers/register", json=REGISTER).status_code == 200
            answers: dict[str, int] = {}

            def call(name: str, fn: Any) -> threading.Thread:
                return _in_thread(lambda: fn().status_code, answers, name)

            def waiting() -> int:
                return _waiting(url)

            # Another transaction holds the tenant's row, as a slow suspension would: the
            # suspension stops at its write of the row while the registers run.
            with psycopg.connect(url) as hold:
                hold.execute("SELECT 1 FROM tenants WHERE id = %s FOR NO KEY UPDATE", [tid])
                with coord.client() as op:
                    suspend = f"/api/admin/tenants/{tid}/suspend"
                    threads = [call("suspend", lambda: op.post(suspend))]
                    wait_until(lambda: waiting() == 1, 10, "the suspension waiting")
                    threads += [call(f"w{i}", lambda wc=wc: wc.post("/api/workers/register",
                                                                    json=REGISTER))
                                for i, wc in enumerate(clients)]  # fmt: skip
                    # Each register either went through or waits too.
                    wait_until(lambda: waiting() - 1 + len(answers) == len(clients), 10,
                               "the registers done or waiting")  # fmt: skip
                    hold.commit()
                    for th in threads:
                        th.join(30)
            assert answers.pop("suspend") == 200
            assert set(answers.values()) <= {200, 403}, answers
            online = _store(coord, read=select(workers.c.name, workers.c.status).where(
                workers.c.tenant_id == tid, workers.c.status != "offline"))  # fmt: skip
            assert online == [], answers
            for wc in clients:
                assert wc.post("/api/workers/register", json=REGISTER).status_code == 403
        finally:
            for wc in clients:
                wc.close()
            stop()


def test_a_suspended_tenants_job_is_never_handed_to_its_connected_worker(coordinator):
    # As if a register had slipped past its tenant's suspension: its worker is connected
    # and idle, its tenant suspended, and a job of it queued. Dispatch must not place it.
    acme = _onboard(coordinator)
    tid = acme["tenant_id"]
    [wc] = _workers(coordinator, acme["api_key"], 1)
    try:
        assert wc.post("/api/workers/register", json=REGISTER).status_code == 200
        with coordinator.client(acme["api_key"]) as a:  # it fits no worker (yet)
            job = a.post("/api/queue/submit", json={"command": ["true"], "gpus": 1}).json()["id"]
        hub = coordinator.app.state.core.hub
        dispatcher = coordinator.app.state.dispatcher

        async def connected() -> list[str]:
            return list(hub.connected())

        with wc.stream("GET", "/api/workers/stream", timeout=30):
            wait_until(lambda: coordinator.call(connected()), 10, "the worker's stream")
            state = select(jobs.c.state).where(jobs.c.id == job)
            tenant = update(tenants).where(tenants.c.id == tid)
            _store(coordinator, tenant.values(status="suspended"),
                   update(jobs).where(jobs.c.id == job).values(gpus=0))  # fmt: skip
            coordinator.call(dispatcher.round())
            assert _store(coordinator, read=state) == [("queued",)]
            # Active again, the same job goes to the same worker: only the suspension held it.
            _store(coordinator, tenant.values(status="active"))
            coordinator.call(dispatcher.round())
            assert _store(coordinator, read=state) == [("assigned",)]
    finally:
        wc.close()


@pytest.mark.postgres
@pytest.mark.parametrize("what", ["tenant", "key"])
def test_a_name_taken_while_it_was_being_checked_answers_409(tmp_path, what):
    # Another transaction inserts the name and is slow to commit: the check of the name
    # finds nothing, the insert waits for the other and then meets the unique constraint.
    import psycopg

    with fresh_database("postgres", tmp_path) as url:
        coord, stop = start_coordinator(tmp_path / "s", url)
        try:
            answers: dict[str, Any] = {}
            with psycopg.connect(url) as other, coord.client() as op:
                if what == "tenant":
                    other.execute("INSERT INTO tenants (id, name, status, created_at)"
                                  " VALUES ('t_other', 'Acme', 'active', now())")  # fmt: skip
                    path, body = "/api/admin/tenants", {"name": "Acme"}
                else:
                    other.execute("INSERT INTO api_keys (id, tenant_id, name, key_hash, role,"
                                  " created_at) VALUES ('key_other', 'default', 'ci',"
                                  " 'h' || md5(random()::text), 'member', now())")  # fmt: skip
                    path, body = "/api/admin/keys", {"name": "ci", "role": "member"}
                th = _in_thread(lambda: op.post(path, json=body), answers, "second")
                wait_until(lambda: _waiting(url) == 1, 10, "the insert waiting")
                other.commit()
                th.join(30)
            r = answers["second"]
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "already_exists"
            assert r.json()["errors"][0]["field"] == "name"
        finally:
            stop()
