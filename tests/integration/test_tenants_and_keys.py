"""Tenants and API keys against a real coordinator: onboarding by an operator only, a
tenant's data out of every other tenant's sight (404), roles and their permissions, keys
that expire, are revoked and rotated, and a suspended tenant refused."""

from __future__ import annotations

import string
import time
from datetime import timedelta

import httpx
import jwt
from harness import start_coordinator
from harness_e2e import wait_until
from sqlalchemy import update
from wire import next_event

from corral.store.tables import api_keys


def onboard(coord, name="Acme"):
    with coord.client() as c:
        r = c.post("/api/admin/tenants", json={"name": name})
    assert r.status_code == 201, r.text
    return r.json()


def worker_of(coord, key, name="w1"):
    """A worker of the key's tenant, registered."""
    with coord.client(key) as c:
        r = c.post("/api/admin/workers", json={"name": name, "worker_type": "persistent"})
        assert r.status_code == 201, r.text
    wc = httpx.Client(base_url=coord.url, headers={"X-Worker-Token": r.json()["token"]},
                      timeout=10)  # fmt: skip
    r = wc.post("/api/workers/register", json={"hostname": "h", "slots": 1, "persistent": True})
    assert r.status_code == 200, r.text
    return wc


def test_an_operator_onboards_a_tenant_whose_admin_sees_only_its_own(coordinator):
    acme = onboard(coordinator)
    assert acme["tenant_id"].startswith("t_") and acme["api_key"].startswith("ck_")
    with coordinator.client() as op, coordinator.client(acme["api_key"]) as a:
        ours = op.post("/api/queue/submit", json={"command": ["true"]}).json()
        theirs = a.post("/api/queue/submit", json={"command": ["true"]}).json()
        assert [j["id"] for j in a.get("/api/jobs").json()["jobs"]] == [theirs["id"]]
        assert theirs["id"] not in {j["id"] for j in op.get("/api/jobs").json()["jobs"]}
        for path in ("", "/events", "/logs", "/result"):  # existence does not leak
            assert a.get(f"/api/jobs/{ours['id']}{path}").status_code == 404, path
            assert op.get(f"/api/jobs/{theirs['id']}{path}").status_code == 404, path
        assert a.post(f"/api/jobs/{ours['id']}/cancel").status_code == 404
        # A tenant's admin is no operator.
        r = a.post("/api/admin/tenants", json={"name": "Other"})
        assert r.status_code == 403 and "tenants.admin" in r.json()["detail"]
        assert a.get("/api/admin/tenants").status_code == 403
        listing = {t["name"]: t for t in op.get("/api/admin/tenants").json()["tenants"]}
        assert listing["Acme"]["status"] == "active" and "default" in listing
        r = op.post("/api/admin/tenants", json={"name": "Acme"})
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "name"
    with httpx.Client(base_url=coordinator.url) as anon:
        assert anon.post("/api/admin/tenants", json={"name": "X"}).status_code == 401


def test_a_tenants_worker_receives_only_its_tenants_jobs(coordinator):
    acme = onboard(coordinator)
    theirs = worker_of(coordinator, acme["api_key"])
    ours = worker_of(coordinator, coordinator.admin_key)
    with coordinator.client() as op, coordinator.client(acme["api_key"]) as a:
        ours_job = op.post("/api/queue/submit", json={"command": ["true"]}).json()["id"]
        theirs_job = a.post("/api/queue/submit", json={"command": ["true"]}).json()["id"]
        assert next_event(theirs)["data"]["job_id"] == theirs_job
        assert next_event(ours)["data"]["job_id"] == ours_job
        # Acting on the other tenant's job with one's own worker token: as if it did not exist.
        r = theirs.post(f"/api/workers/job/{ours_job}/status",
                        json={"attempt": 1, "status": "running"})  # fmt: skip
        assert r.status_code == 404, r.text
        assert op.get(f"/api/jobs/{ours_job}").json()["state"] == "assigned"
        # Nor can its admin see or touch the other tenant's workers.
        wid = op.get("/api/admin/workers").json()["workers"][0]["id"]
        assert a.get(f"/api/admin/workers/{wid}").status_code == 404
        assert a.post(f"/api/admin/workers/{wid}/drain").status_code == 404
    theirs.close()
    ours.close()


def test_roles_grant_their_permissions_and_no_more(coordinator):
    acme = onboard(coordinator)
    with coordinator.client(acme["api_key"]) as admin:
        made = {role: admin.post("/api/admin/keys", json={"name": role, "role": role}).json()
                for role in ("viewer", "member")}  # fmt: skip
        r = admin.post("/api/admin/keys", json={"name": "op", "role": "operator"})
        assert r.status_code == 403 and r.json()["errors"][0]["field"] == "role"
    with coordinator.client(made["viewer"]["key"]) as viewer:
        assert viewer.get("/api/jobs").status_code == 200
        r = viewer.post("/api/queue/submit", json={"command": ["true"]})
        assert r.status_code == 403 and "jobs.submit" in r.json()["detail"]
        assert viewer.get("/api/admin/keys").status_code == 403
        assert viewer.get("/api/admin/workers").status_code == 403
    with coordinator.client(made["member"]["key"]) as member:
        job = member.post("/api/queue/submit", json={"command": ["true"]})
        assert job.status_code == 201
        assert member.post(f"/api/jobs/{job.json()['id']}/cancel").status_code == 200
        assert member.post("/api/admin/workers", json={"name": "w"}).status_code == 403
        # A member cannot make itself an admin.
        assert (
            member.post("/api/admin/keys", json={"name": "x", "role": "admin"}).status_code == 403
        )


def test_keys_are_listed_without_secrets_and_stop_when_revoked_rotated_or_expired(coordinator):
    acme = onboard(coordinator)
    with coordinator.client(acme["api_key"]) as admin:
        spec = {"name": "ci", "role": "member", "expires_in_s": 3600}
        ci = admin.post("/api/admin/keys", json=spec).json()
        assert ci["prefix"] == ci["key"][:11] and ci["expires_at"]
        with coordinator.client(ci["key"]) as c:
            assert c.get("/api/jobs").status_code == 200
        listed = {k["name"]: k for k in admin.get("/api/admin/keys").json()["keys"]}
        assert set(listed) == {"admin", "ci"} and "key" not in listed["ci"]
        assert "key_hash" not in listed["ci"] and listed["ci"]["last_used_at"] is not None
        assert ci["key"] not in admin.get("/api/admin/keys").text

        rotated = admin.post(f"/api/admin/keys/{ci['id']}/rotate").json()
        assert rotated["id"] == ci["id"] and rotated["key"] != ci["key"]
        with coordinator.client(ci["key"]) as old, coordinator.client(rotated["key"]) as new:
            assert old.get("/api/jobs").status_code == 401
            assert new.get("/api/jobs").status_code == 200

        assert admin.delete(f"/api/admin/keys/{ci['id']}").status_code == 204
        with coordinator.client(rotated["key"]) as c:
            assert c.get("/api/jobs").status_code == 401
        assert admin.delete(f"/api/admin/keys/{ci['id']}").status_code == 404

        soon = admin.post("/api/admin/keys", json={"name": "soon", "expires_in_s": 60}).json()
        with coordinator.client(soon["key"]) as c:
            assert c.get("/api/jobs").status_code == 200
        expire(coordinator, soon["id"])
        with coordinator.client(soon["key"]) as c:
            r = c.get("/api/jobs")
            assert r.status_code == 401 and "expired" in r.json()["detail"]
        r = admin.post("/api/admin/keys", json={"name": "x", "expires_in_s": 5})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "expires_in_s"
    # Another tenant's admin sees none of these keys and cannot touch them.
    with coordinator.client() as op:
        assert soon["id"] not in op.get("/api/admin/keys").text
        assert op.post(f"/api/admin/keys/{soon['id']}/rotate").status_code == 404


def expire(coord, key_id):
    """Its expiry put in the past, and this coordinator's memory of it dropped."""
    core = coord.app.state.core

    async def go():
        async with core.store.tx() as conn:
            past = core.clock.now() - timedelta(seconds=1)
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                               .values(expires_at=past))  # fmt: skip
        core.credentials.forget_key(key_id)

    coord.call(go())


def test_a_suspended_tenants_keys_and_workers_are_refused_until_resumed(coordinator):
    acme = onboard(coordinator)
    wc = worker_of(coordinator, acme["api_key"])
    with coordinator.client() as op, coordinator.client(acme["api_key"]) as a:
        job = a.post("/api/queue/submit", json={"command": ["true"]}).json()["id"]
        assert next_event(wc)["data"]["job_id"] == job
        r = op.post(f"/api/admin/tenants/{acme['tenant_id']}/suspend")
        assert r.status_code == 200 and r.json()["status"] == "suspended"
        r = a.get("/api/jobs")
        assert r.status_code == 403 and "suspended" in r.json()["detail"]
        # Its worker is offline, its attempt lost (the job waits, queued) and it cannot
        # come back while the tenant is suspended.
        r = wc.post("/api/workers/register", json={"hostname": "h", "slots": 1})
        assert r.status_code == 403, r.text
        r = wc.post(f"/api/workers/job/{job}/status", json={"attempt": 1, "status": "running"})
        assert r.status_code == 409, r.text
        # Its own tenant an operator cannot suspend.
        assert op.post("/api/admin/tenants/default/suspend").status_code == 409
        assert op.post("/api/admin/tenants/t_nope/suspend").status_code == 404

        assert (
            op.post(f"/api/admin/tenants/{acme['tenant_id']}/resume").json()["status"] == "active"
        )
        got = a.get(f"/api/jobs/{job}")
        assert got.status_code == 200 and got.json()["state"] == "queued"
        r = wc.post("/api/workers/register", json={"hostname": "h", "slots": 1})
        assert r.status_code == 200, r.text
    wc.close()


def token_for(coord, key, **body):
    with coord.client(key) as c:
        r = c.post("/api/auth/token", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_key_exchanged_for_a_token_that_speaks_for_it_until_it_is_revoked(coordinator):
    acme = onboard(coordinator)
    with coordinator.client(acme["api_key"]) as admin:
        viewer = admin.post("/api/admin/keys", json={"name": "v", "role": "viewer"}).json()
    issued = token_for(coordinator, viewer["key"], expires_in_s=120)
    assert issued["token_type"] == "bearer" and issued["key_id"] == viewer["id"]
    header = jwt.get_unverified_header(issued["access_token"])
    assert header["alg"] == "HS256" and header["kid"].startswith("sk_")
    claims = jwt.decode(issued["access_token"], options={"verify_signature": False})
    assert claims["aud"] == "corral-api" and claims["iss"] == "corral"
    assert claims["exp"] - claims["iat"] == 120 and claims["tid"] == acme["tenant_id"]
    with coordinator.client(issued["access_token"]) as t:
        assert t.get("/api/jobs").status_code == 200
        assert t.post("/api/queue/submit", json={"command": ["true"]}).status_code == 403
        assert t.post("/api/auth/token", json={}).status_code == 403  # no renewing itself
    with coordinator.client(acme["api_key"]) as admin:
        assert admin.delete(f"/api/admin/keys/{viewer['id']}").status_code == 204
    with coordinator.client(issued["access_token"]) as t:
        assert t.get("/api/jobs").status_code == 401
    with coordinator.client(acme["api_key"]) as admin:
        r = admin.post("/api/auth/token", json={"expires_in_s": 10**6})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "expires_in_s"


def test_forged_expired_and_foreign_tokens_are_refused(coordinator):
    good = token_for(coordinator, coordinator.admin_key)["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    secret = coordinator.app.state.core.tokens.keys[kid]
    now = int(time.time())

    def sign(c, key=secret, kid=kid):
        return jwt.encode(c, key, algorithm="HS256", headers={"kid": kid})

    head, sig = good.rsplit(".", 1)
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    last = alphabet.index(sig[-1])  # its two low bits are padding: made not zero
    padded = alphabet[(last & ~3) | (2 if last & 3 == 1 else 1)]
    forged = {
        "tampered": f"{head}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}",
        "padding not zero": f"{head}.{sig[:-1]}{padded}",
        "another secret": sign(claims, b"x" * 32),
        "alg none": jwt.encode(claims, None, algorithm="none", headers={"kid": kid}),
        "expired": sign({**claims, "iat": now - 600, "exp": now - 300}),
        "another audience": sign({**claims, "aud": "elsewhere"}),
        "no expiry": sign({k: v for k, v in claims.items() if k != "exp"}),
        "unknown kid": sign(claims, kid="sk_x"),
        "another tenant": sign({**claims, "tid": "t_other"}),
        "no key secret": sign({k: v for k, v in claims.items() if k != "kh"}),
        "another key secret": sign({**claims, "kh": "0" * 16}),
    }
    for name, token in forged.items():
        with coordinator.client(token) as c:
            r = c.get("/api/jobs")
        assert r.status_code == 401, (name, r.text)
        assert "token" in r.json()["detail"], (name, r.text)
    with coordinator.client("a.b.c") as c:  # no header: not a token, and no key either
        r = c.get("/api/jobs")
        assert r.status_code == 401 and "API key" in r.json()["detail"], r.text
    with coordinator.client(good) as c:
        assert c.get("/api/jobs").status_code == 200


def test_a_token_from_one_coordinator_holds_on_another_of_the_same_store(tmp_path, db_url):
    key = f"ck_test_{'k' * 32}"
    one, stop_one = start_coordinator(tmp_path / "a", db_url, bootstrap_admin_key=key)
    two, stop_two = start_coordinator(tmp_path / "b", db_url, bootstrap_admin_key=key)
    try:
        token = token_for(one, key)["access_token"]
        with two.client(token) as c:
            assert c.get("/api/jobs").status_code == 200
    finally:
        stop_two()
        stop_one()


def signing_keys(coord, **backdate):
    """The store's signing keys (id -> when made), after putting those named in
    ``backdate`` (id -> seconds) that far in the past."""
    from datetime import UTC, datetime

    from corral.store.tables import signing_keys as table

    async def go():
        async with coord.app.state.core.store.tx() as conn:
            for kid, ago in backdate.items():
                then = datetime.now(UTC) - timedelta(seconds=ago)
                await conn.execute(update(table).where(table.c.id == kid).values(created_at=then))
            rows = (await conn.execute(table.select())).mappings().all()
            return {r["id"]: r["created_at"] for r in rows}

    return coord.call(go())


def test_a_signing_key_is_kept_while_a_coordinator_may_still_sign_with_it(tmp_path, db_url):
    from corral.server.tokens import PRUNE_AFTER_S

    key = f"ck_test_{'k' * 32}"
    day = 86400
    one, stop_one = start_coordinator(tmp_path / "a", db_url, bootstrap_admin_key=key)
    stop_two = None
    try:
        [first] = signing_keys(one)
        signing_keys(one, **{first: 8.5 * day})  # one has signed with it for 8.5 days
        early = token_for(one, key)["access_token"]
        assert jwt.get_unverified_header(early)["kid"] == first
        # A coordinator starting now makes a new key, and keeps the one the other signs with.
        two, stop_two = start_coordinator(tmp_path / "b", db_url, bootstrap_admin_key=key)
        made = signing_keys(two)
        assert first in made and len(made) == 2
        [second] = set(made) - {first}
        still = token_for(one, key)["access_token"]  # one has not looked again yet
        for coord in (one, two):
            for token in (early, still):
                with coord.client(token) as c:
                    assert c.get("/api/jobs").status_code == 200
        assert jwt.get_unverified_header(token_for(two, key)["access_token"])["kid"] == second
        # Running, the first reads the keys again and signs with the newest.
        core = one.app.state.core
        one.call(core.tokens.refresh(core.store.tx))
        late = token_for(one, key)["access_token"]
        assert jwt.get_unverified_header(late)["kid"] == second
        # The old key goes once its successor has been the newest for longer than any
        # token lives, and not before.
        signing_keys(two, **{second: PRUNE_AFTER_S - 600})
        one.call(core.tokens.refresh(core.store.tx))
        assert set(signing_keys(one)) == {first, second}
        signing_keys(two, **{second: PRUNE_AFTER_S + 60})
        one.call(core.tokens.refresh(core.store.tx))
        assert set(signing_keys(one)) == {second}
        for coord in (one, two):
            with coord.client(late) as c:
                assert c.get("/api/jobs").status_code == 200
    finally:
        if stop_two is not None:
            stop_two()
        stop_one()


def test_rotating_a_key_ends_its_tokens_on_every_coordinator(tmp_path, db_url):
    # A token names its key's id, which rotation keeps: it must be bound to the secret too.
    from corral.server.auth import KEY_TTL_S

    key = f"ck_test_{'k' * 32}"
    one, stop_one = start_coordinator(tmp_path / "a", db_url, bootstrap_admin_key=key)
    two, stop_two = start_coordinator(tmp_path / "b", db_url, bootstrap_admin_key=key)
    try:
        acme = onboard(one)
        with one.client(acme["api_key"]) as admin:
            ci = admin.post("/api/admin/keys", json={"name": "ci", "role": "member"}).json()
        before = token_for(one, ci["key"])["access_token"]
        for coord in (one, two):
            with coord.client(before) as c:
                assert c.get("/api/jobs").status_code == 200
        with one.client(acme["api_key"]) as admin:
            rotated = admin.post(f"/api/admin/keys/{ci['id']}/rotate").json()
        with one.client(before) as c:  # at once where it was rotated
            r = c.get("/api/jobs")
            assert r.status_code == 401 and "rotated" in r.json()["detail"], r.text
        # Elsewhere as soon as the old secret itself stops there (KEY_TTL_S), and for good.
        with two.client(before) as c, two.client(ci["key"]) as old:
            wait_until(lambda: c.get("/api/jobs").status_code == 401, KEY_TTL_S + 5, "refusal")
            assert old.get("/api/jobs").status_code == 401
            time.sleep(KEY_TTL_S)
            assert c.get("/api/jobs").status_code == 401
        after = token_for(two, rotated["key"])["access_token"]
        for coord in (one, two):
            with coord.client(after) as c:
                assert c.get("/api/jobs").status_code == 200
    finally:
        stop_two()
        stop_one()


def test_refusals_are_audited_and_a_source_that_keeps_failing_is_slowed(tmp_path, db_url):
    coord, stop = start_coordinator(tmp_path / "c", db_url, auth_failures_per_minute=5)
    try:
        with coord.client() as op:
            acme = op.post("/api/admin/tenants", json={"name": "Acme"}).json()
        with coord.client(acme["api_key"]) as a:
            viewer = a.post("/api/admin/keys", json={"name": "v", "role": "viewer"}).json()
        with coord.client(viewer["key"]) as v:
            assert v.post("/api/queue/submit", json={"command": ["true"]}).status_code == 403
        with coord.client("ck_" + "x" * 43) as bad:
            codes = [bad.get("/api/jobs").status_code for _ in range(7)]
            assert codes == [401] * 5 + [429] * 2
            r = bad.get("/api/jobs")
            assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
        with coord.client() as op:  # a valid key from the same address is slowed too
            assert op.get("/api/jobs").status_code == 429
        coord.app.state.core.refusals = type(coord.app.state.core.refusals)(1000)
        with coord.client() as op:
            everything = op.get("/api/admin/audit", params={"limit": 1000}).json()["events"]
            kinds = [e["kind"] for e in everything]
            assert kinds.count("auth.refused") == 5  # recorded up to the budget, no more
            assert kinds.count("access.denied") == 1 and "tenant.onboarded" in kinds
            denied = next(e for e in everything if e["kind"] == "access.denied")
            assert denied["actor"] == viewer["id"] and denied["tenant_id"] == acme["tenant_id"]
            assert (
                denied["source"] == "127.0.0.1" and denied["detail"]["route"] == "/api/queue/submit"
            )
            made = op.get("/api/admin/audit", params={"action": "key.*"}).json()["events"]
            assert {e["kind"] for e in made} == {"key.created"}
            assert all(e["source"] for e in made if e["actor"] != "coordinator start")
            mine = op.get("/api/admin/audit", params={"actor": acme["key_id"]}).json()["events"]
            assert [e["detail"]["name"] for e in mine] == ["v"]
            r = op.get("/api/admin/audit", params={"since": "yesterday"})
            assert r.status_code == 422 and r.json()["errors"][0]["field"] == "since"
        with coord.client(acme["api_key"]) as a:  # a tenant's admin sees only its own
            theirs = a.get("/api/admin/audit", params={"limit": 1000}).json()["events"]
            assert {e["tenant_id"] for e in theirs} == {acme["tenant_id"]}
            assert "auth.refused" not in {e["kind"] for e in theirs}
        with coord.client(viewer["key"]) as v:
            assert v.get("/api/admin/audit").status_code == 403
    finally:
        stop()


def test_self_service_onboarding_is_off_unless_allowed_and_then_rate_limited(tmp_path, db_url):
    with httpx.Client() as anon:
        # Off by default: only an operator onboards.
        coord, stop = start_coordinator(tmp_path / "a", db_url)
        try:
            r = anon.post(coord.url + "/api/onboard", json={"name": "Walk-in"})
            assert r.status_code == 403 and "operator" in r.json()["detail"]
        finally:
            stop()
        coord, stop = start_coordinator(tmp_path / "b", db_url, self_onboarding=True,
                                        self_onboarding_per_hour=2)  # fmt: skip
        try:
            made = anon.post(coord.url + "/api/onboard", json={"name": "Walk-in"})
            assert made.status_code == 201, made.text
            with coord.client(made.json()["api_key"]) as a:
                assert a.get("/api/jobs").status_code == 200
                assert a.get("/api/admin/tenants").status_code == 403  # an admin, no operator
            r = anon.post(coord.url + "/api/onboard", json={"name": "Walk-in"})
            assert r.status_code == 409  # counted, and refused: the name is taken
            r = anon.post(coord.url + "/api/onboard", json={"name": "Third"})
            assert r.status_code == 429 and "hour" in r.json()["detail"]
            with coord.client() as op:
                entries = op.get("/api/admin/audit", params={"action": "tenant.*"}).json()
            [entry] = [e for e in entries["events"] if e["detail"].get("name") == "Walk-in"]
            assert entry["actor"] == "self-service" and entry["source"] == "127.0.0.1"
        finally:
            stop()
