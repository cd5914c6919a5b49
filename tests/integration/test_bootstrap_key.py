"""The bootstrap admin key: valid on every start, and only the one given at the last."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import start_coordinator


def test_a_replaced_bootstrap_key_stops_working(tmp_path, db_url):
    first, stop = start_coordinator(tmp_path / "a", db_url)
    old = first.admin_key
    with first.client() as c:
        assert c.get("/api/jobs").status_code == 200
    stop()
    second, stop = start_coordinator(tmp_path / "b", db_url)  # the same store, another key
    try:
        assert second.admin_key != old
        with second.client() as c:
            assert c.get("/api/jobs").status_code == 200
        with second.client(old) as c:
            r = c.get("/api/jobs")
            assert r.status_code == 401, r.text
    finally:
        stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl")
def test_a_running_server_shows_its_bootstrap_key_to_no_job(tmp_path):
    # A job of the same user would read /proc/<server>/environ: the key must be gone from it.
    key = f"ck_{'s' * 40}"
    env = {**os.environ, "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY": key}
    server = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "server", "--port", "0", "--data-dir",
         str(tmp_path / "d")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        deadline, seen = time.monotonic() + 60, ""
        while "listening" not in seen and time.monotonic() < deadline:
            seen += server.stderr.readline()
        assert "listening" in seen, seen
        # Root may read any /proc file: the value must not be there at all; anyone else
        # must not even be let in (undumpable).
        try:
            seen_env = Path(f"/proc/{server.pid}/environ").read_bytes()
        except PermissionError:
            return
        assert key.encode() not in seen_env
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("bootstrap", [True, False], ids=["bootstrap key", "first start's key"])
def test_coordinators_starting_at_once_on_a_fresh_store_all_start(tmp_path, db_url, bootstrap):
    # Each makes its operator key at its start: racing to insert it, the one that loses
    # finds it made by another, rather than failing its start; only one key is printed.
    from corral.server.auth import ensure_operator_key
    from corral.server.clock import Clock
    from corral.server.config import ServerSettings
    from corral.server.core import Core
    from corral.server.hub import Hub
    from corral.store import Store
    from corral.store.db import migrate

    migrate(db_url)
    key = f"ck_test_{'r' * 32}" if bootstrap else None
    settings = ServerSettings(data_dir=tmp_path, db_url=db_url)

    async def starts():
        cores = []
        for _ in range(4):
            clock = Clock()
            cores.append(Core(store=Store(db_url, settings.db_timeouts()), hub=Hub(clock),
                              clock=clock, settings=settings))  # fmt: skip
        try:
            return await asyncio.gather(*(ensure_operator_key(c, key) for c in cores))
        finally:
            for c in cores:
                await c.store.close()

    printed = asyncio.run(starts())
    assert sum(k is not None for k in printed) == (0 if bootstrap else 1), printed


def test_only_the_bootstrap_key_is_replaced_and_its_name_is_reserved(tmp_path, db_url):
    from corral.model import Role
    from corral.server.auth import BOOTSTRAP_KEY_NAME, key_values
    from corral.store import keys as keys_q

    first, stop = start_coordinator(tmp_path / "a", db_url)
    try:
        with first.client() as op:
            acme = op.post("/api/admin/tenants", json={"name": "Acme"}).json()
            r = op.post("/api/admin/keys", json={"name": BOOTSTRAP_KEY_NAME, "role": "operator"})
            assert r.status_code == 409 and r.json()["errors"][0]["field"] == "name", r.text
        with first.client(acme["api_key"]) as a:
            r = a.post("/api/admin/keys", json={"name": BOOTSTRAP_KEY_NAME, "role": "admin"})
            assert r.status_code == 409 and r.json()["errors"][0]["field"] == "name", r.text
        # One made before the name was reserved, in another tenant.
        core = first.app.state.core

        async def made_before() -> str:
            async with core.store.tx() as conn:
                key, row = key_values(acme["tenant_id"], BOOTSTRAP_KEY_NAME, Role.ADMIN,
                                      core.clock.now())  # fmt: skip
                await keys_q.insert(conn, row)
                return key

        theirs = first.call(made_before())
    finally:
        stop()
    second, stop = start_coordinator(tmp_path / "b", db_url)  # another bootstrap key
    try:
        with second.client(first.admin_key) as old, second.client(theirs) as t:
            assert old.get("/api/jobs").status_code == 401
            assert t.get("/api/jobs").status_code == 200  # not the bootstrap key: kept
        with second.client() as op:
            revoked = op.get("/api/admin/audit", params={"action": "key.revoked"}).json()
        [entry] = revoked["events"]
        assert entry["tenant_id"] == "default" and "bootstrap" in entry["message"]
    finally:
        stop()


def test_a_bootstrap_key_with_two_dots_is_a_key_and_one_that_is_a_token_is_refused(
    tmp_path, db_url
):
    from pydantic import ValidationError

    from corral.server.config import ServerSettings

    dotted = "ck_test." + "d" * 16 + "." + "e" * 16  # as a password manager might make it
    coord, stop = start_coordinator(tmp_path / "a", db_url, bootstrap_admin_key=dotted)
    try:
        with coord.client(dotted) as c:
            assert c.get("/api/jobs").status_code == 200
            token = c.post("/api/auth/token", json={}).json()["access_token"]
        with coord.client(token) as c:  # a token is still a token
            assert c.get("/api/jobs").status_code == 200
    finally:
        stop()
    # One that would be taken for a token never becomes a key.
    with pytest.raises(ValidationError, match="token"):
        ServerSettings(data_dir=tmp_path, bootstrap_admin_key=token)
