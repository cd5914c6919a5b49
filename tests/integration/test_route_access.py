"""Every route of the OpenAPI document against every identity that must not pass: generated
from the route table, so a route added tomorrow is attacked the day it is added.

Each operation's security requirement names what it needs: ``{"HTTPBearer": [permission]}``
for an API key holding that permission, ``{"APIKeyHeader": []}`` for a worker (its token, or
a request signed with its certificate's key), ``{"RegistrationToken": []}`` for a worker
enrolling; an operation with none must be one of the few that are public on purpose.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from sqlalchemy import update

from corral.model import PERMISSIONS, Role
from corral.protocol import Enrolled, signing
from corral.store import artifacts as artifacts_q
from corral.store.tables import api_keys
from corral.worker.identity import Held, SignedAuth

# Public on purpose; self-service onboarding is refused unless the server allows it.
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("POST", "/api/onboard")}
SKIP = {("GET", "/api/workers/stream")}  # never ends by design: its refusals are tested below
# What a valid body for each worker route looks like, so that an identity that passes the
# door reaches the handler (and its tenant check) rather than a 422.
WORKER_BODIES = {
    "/api/workers/job/{job_id}/status": {"attempt": 1, "status": "running"},
    "/api/workers/job/{job_id}/logs": {"attempt": 1, "seq": 0, "data": "x"},
    "/api/workers/renew": {"csr": "x"},
    "/api/workers/enrol": {"csr": "x"},
}


def signed_worker(coord, api_key, name):
    """A worker of ``api_key``'s tenant enrolled with a certificate: its requests' signer."""
    with coord.client(api_key) as admin:
        spec = {"name": name, "worker_type": "persistent"}
        token = admin.post("/api/admin/workers/registrations", json=spec).json()["token"]
    key = Ed25519PrivateKey.generate()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, None).public_bytes(serialization.Encoding.PEM).decode())  # fmt: skip
    with httpx.Client(base_url=coord.url, timeout=10) as h:
        r = h.post("/api/workers/enrol", json={"csr": csr},
                   headers={signing.REGISTRATION_TOKEN_HEADER: token})  # fmt: skip
    assert r.status_code == 201, r.text
    return SignedAuth(Held.of(key, Enrolled.model_validate(r.json())))


def operations(coord):
    doc = httpx.get(coord.url + "/openapi.json").json()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op.get("security")


@pytest.fixture
def world(coordinator):
    """Tenant A with a job, a worker, keys of every kind; tenant B with its own admin and
    worker. Returns the identities, by name, and the ids that fill A's paths."""
    c = coordinator
    with c.client() as op:
        a = op.post("/api/admin/tenants", json={"name": "A"}).json()
        b = op.post("/api/admin/tenants", json={"name": "B"}).json()
    ids, tokens = {"tenant_id": a["tenant_id"]}, {}
    for name, t in (("a", a), ("b", b)):
        with c.client(t["api_key"]) as admin:
            w = admin.post("/api/admin/workers", json={"name": "w", "worker_type": "persistent"})
            tokens[name] = w.json()["token"]
            if name == "a":
                ids["worker_id"] = w.json()["id"]
                ids["job_id"] = admin.post("/api/queue/submit", json={"command": ["true"]}).json()[
                    "id"
                ]
                keys = {r: admin.post("/api/admin/keys", json={"name": r, "role": r}).json()
                        for r in ("viewer", "member")}  # fmt: skip
                expired = admin.post(
                    "/api/admin/keys", json={"name": "old", "expires_in_s": 60}
                ).json()
                revoked = admin.post("/api/admin/keys", json={"name": "gone"}).json()
                assert admin.delete(f"/api/admin/keys/{revoked['id']}").status_code == 204
                ids["key_id"] = keys["member"]["id"]
    core = c.app.state.core
    # A blob of A's and an artifact of A's job, as an upload and an attempt leave them.
    package = b"A's package"
    ids["digest"] = hashlib.sha256(package).hexdigest()
    with c.client(a["api_key"]) as admin:
        assert admin.put(f"/api/blobs/{ids['digest']}", content=package).status_code == 201

    async def artifact() -> int:
        async with core.store.tx() as conn:
            return await artifacts_q.add(
                conn, tenant_id=a["tenant_id"], job_id=ids["job_id"], attempt=1,
                kind="checkpoint", name="ck", step=1, digest=ids["digest"],
                size=len(package), now=core.clock.now(),
            )  # fmt: skip

    ids["artifact_id"] = str(c.call(artifact()))

    async def expire():
        async with core.store.tx() as conn:
            past = core.clock.now() - timedelta(seconds=1)
            await conn.execute(update(api_keys).where(api_keys.c.id == expired["id"])
                               .values(expires_at=past))  # fmt: skip
        core.credentials.forget_key(expired["id"])

    c.call(expire())
    bearer = lambda key: {"Authorization": f"Bearer {key}"}  # noqa: E731
    return {
        "A's admin": bearer(a["api_key"]), "A's worker": {"X-Worker-Token": tokens["a"]},
        "B's admin": bearer(b["api_key"]), "B's worker": {"X-Worker-Token": tokens["b"]},
        "A's viewer": bearer(keys["viewer"]["key"]),
        "nothing": {}, "a garbage key": bearer("ck_" + "x" * 43),
        "a worker token as an API key": bearer(tokens["a"]),
        "an API key as a worker token": {"X-Worker-Token": a["api_key"]},
        "an expired key": bearer(expired["key"]), "a revoked key": bearer(revoked["key"]),
        "A's signed worker": signed_worker(c, a["api_key"], "signed"),
        "B's signed worker": signed_worker(c, b["api_key"], "signed"),
        "an API key as a registration token": {signing.REGISTRATION_TOKEN_HEADER: a["api_key"]},
        "a worker token as a registration token":
            {signing.REGISTRATION_TOKEN_HEADER: tokens["a"]},
    }, ids, a["api_key"]  # fmt: skip


# What a valid query for each worker route that needs one looks like (same reason).
WORKER_QUERIES = {
    "/api/workers/job/{job_id}/workdir": {"attempt": 1},
    "/api/workers/job/{job_id}/checkpoint": {"attempt": 1},
    "/api/workers/job/{job_id}/checkpoints/{digest}": {"attempt": 1, "step": 1},
    "/api/workers/job/{job_id}/outputs/{digest}": {"attempt": 1, "name": "out"},
}


def call(coord, method, path, ids, headers):
    url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
    url += ("?" + "&".join(f"{k}={v}" for k, v in WORKER_QUERIES[path].items())
            if path in WORKER_QUERIES else "")  # fmt: skip
    body = WORKER_BODIES.get(path, {"ids": [ids["job_id"]], "timeout_s": 0}
                             if path == "/api/jobs/wait" else {})  # fmt: skip
    auth = headers if isinstance(headers, httpx.Auth) else None
    headers = None if auth is not None else headers
    with httpx.Client(base_url=coord.url, headers=headers, auth=auth, timeout=10) as h:
        if method in ("GET", "DELETE"):
            return h.request(method, url)
        return h.request(method, url, json=body)


def test_every_route_refuses_every_identity_it_must(coordinator, world):
    who, ids, a_admin = world
    tried = 0
    viewer_may = {p.value for p in PERMISSIONS[Role.VIEWER]}
    admin_may = {p.value for p in PERMISSIONS[Role.ADMIN]}
    for method, path, security in operations(coordinator):
        if (method, path) in SKIP:
            continue
        if not security:
            assert (method, path) in PUBLIC, f"{method} {path} has no security requirement"
            continue
        ((scheme, needs),) = security[0].items()
        refused = ["nothing", "a garbage key", "an expired key", "a revoked key"]
        if scheme == "HTTPBearer":
            refused += ["a worker token as an API key", "A's worker", "A's signed worker"]
        elif scheme == "RegistrationToken":
            refused += ["an API key as a registration token",
                        "a worker token as a registration token", "A's signed worker"]  # fmt: skip
        else:
            assert scheme == "APIKeyHeader" and needs == [], (method, path, security)
            refused += ["an API key as a worker token", "A's admin"]
        for name in refused:
            r = call(coordinator, method, path, ids, who[name])
            assert r.status_code == 401, (method, path, name, r.status_code, r.text[:200])
            tried += 1
        if scheme == "HTTPBearer":
            r = call(coordinator, method, path, ids, who["A's viewer"])
            if set(needs) <= viewer_may:
                assert r.status_code not in (401, 403), (method, path, r.text[:200])
            else:
                assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
            tried += 1
            # Another tenant's admin: what it lacks is refused; where it names A's things,
            # they do not exist for it; a listing shows none of them.
            r = call(coordinator, method, path, ids, who["B's admin"])
            tried += 1
            if not set(needs) <= admin_may:
                assert r.status_code == 403, (method, path, r.status_code)
            elif path == "/api/blobs/{digest}":
                # A's digest in B's own store: B has no such blob, and the empty body it
                # sends is not the content that digest names.
                assert r.status_code == (422 if method == "PUT" else 404), (method, r.text)
            elif "{" in path or path == "/api/jobs/wait":
                assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
            elif method == "GET":
                assert r.status_code == 200, (method, path, r.status_code)
                named = [v for k, v in ids.items() if k != "artifact_id"]  # a small number
                assert not any(v in r.text for v in named), (method, path)
        elif scheme == "APIKeyHeader" and "{" in path:
            for other in ("B's worker", "B's signed worker"):
                r = call(coordinator, method, path, ids, who[other])
                assert r.status_code == 404, (method, path, other, r.status_code, r.text[:200])
                tried += 1
    # Nothing above changed A's things: its job is still queued, its keys still work.
    with coordinator.client(a_admin) as c:
        assert c.get(f"/api/jobs/{ids['job_id']}").json()["state"] == "queued"
    print(
        f"route access: {len(list(operations(coordinator)))} operations, {tried} refusals checked"
    )
    assert tried > 200


@pytest.mark.parametrize("name", ["nothing", "a garbage key", "an API key as a worker token",
                                  "an expired key"])  # fmt: skip
def test_the_worker_stream_refuses_what_is_not_a_worker_token(coordinator, world, name):
    who, _, _ = world
    with httpx.Client(base_url=coordinator.url, headers=who[name], timeout=10) as h:
        assert h.get("/api/workers/stream").status_code == 401
