"""Workers enrolled with a certificate, attacked: a registration token used twice or past its
end, a CSR that is not one, a request whose signature is not its worker's (another key,
another worker's id, a changed body), one replayed or out of its window, a certificate
expired, rotated or removed: each refused, and the honest worker's requests taken."""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from sqlalchemy import update

from corral.protocol import signing
from corral.store.tables import registrations, workers

REGISTER = {"hostname": "h", "slots": 1}


def csr_for(key: object) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "w")])
    algorithm = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, algorithm)  # type: ignore[arg-type]
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def issue(coord, name="box", key=None, **spec):
    with coord.client(key) as c:
        r = c.post("/api/admin/workers/registrations",
                   json={"name": name, "worker_type": "persistent", **spec})  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()["token"]


def enrol(coord, token, key=None):
    key = key or Ed25519PrivateKey.generate()
    with httpx.Client(base_url=coord.url, timeout=10) as h:
        r = h.post("/api/workers/enrol", json={"csr": csr_for(key)},
                   headers={signing.REGISTRATION_TOKEN_HEADER: token})  # fmt: skip
    return r, key


class Signed:
    """A worker's signed requests, built by hand so that a test can change any part."""

    def __init__(self, coord, worker_id, key):
        self.coord, self.worker_id, self.key = coord, worker_id, key

    def request(self, method, path, json=None, *, sign_as=None, key=None, skew=0.0, body=None):
        with httpx.Client(base_url=self.coord.url, timeout=10) as h:
            req = h.build_request(method, path, json=json)
            content = req.content
            target = req.url.raw_path.decode()
            header = signing.sign(key or self.key, sign_as or self.worker_id, method, target,
                                  content, time.time() + skew)  # fmt: skip
            req.headers[signing.SIGNATURE_HEADER] = header
            if body is not None:  # the same signature on another body
                headers = {k: v for k, v in req.headers.items() if k.lower() != "content-length"}
                req = h.build_request(method, path, content=body, headers=headers)
            return h.send(req), req

    def resend(self, req):
        with httpx.Client(timeout=10) as h:
            return h.send(req)


@pytest.fixture
def enrolled(coordinator):
    r, key = enrol(coordinator, issue(coordinator, labels={"team": "nlp"}))
    assert r.status_code == 201, r.text
    return Signed(coordinator, r.json()["worker_id"], key), r.json()


def test_a_worker_enrols_and_signs_its_requests(coordinator, enrolled):
    w, answer = enrolled
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    ca = x509.load_pem_x509_certificate((coordinator.data_dir / "pki" / "ca.pem").read_bytes())
    assert cert.issuer == ca.subject and answer["ca_certificate"].strip() == ca.public_bytes(
        serialization.Encoding.PEM).decode().strip()  # fmt: skip
    uri = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(u.value) for u in uri] == [f"urn:corral:tenant:default:worker:{w.worker_id}"]
    assert oct((coordinator.data_dir / "pki" / "ca.key").stat().st_mode & 0o777) == "0o600"
    r, _ = w.request("POST", "/api/workers/register", REGISTER)
    assert r.status_code == 200, r.text
    with coordinator.client() as c:
        view = c.get(f"/api/admin/workers/{w.worker_id}").json()
        kinds = [
            e["kind"] for e in c.get(f"/api/admin/workers/{w.worker_id}/events").json()["events"]
        ]
    assert view["name"] == "box" and view["labels"] == {"team": "nlp"}
    assert view["cert_expires_at"] is not None
    assert kinds[:3] == ["worker.created", "worker.enrolled", "worker.registered"]
    # Renewed for the same key; a CSR for another key is refused.
    r, _ = w.request("POST", "/api/workers/renew", {"csr": csr_for(w.key)})
    assert r.status_code == 200, r.text
    r, _ = w.request("POST", "/api/workers/renew", {"csr": csr_for(Ed25519PrivateKey.generate())})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "csr", r.text


def test_a_registration_token_enrols_once_and_not_after_its_end(coordinator):
    token = issue(coordinator)
    assert enrol(coordinator, token)[0].status_code == 201
    again = enrol(coordinator, token)[0]
    assert again.status_code == 401, again.text
    late = issue(coordinator, name="late")

    async def expire():
        async with coordinator.app.state.core.store.tx() as conn:
            past = coordinator.app.state.core.clock.now() - timedelta(seconds=1)
            await conn.execute(update(registrations).values(expires_at=past))

    coordinator.call(expire())
    assert enrol(coordinator, late)[0].status_code == 401
    assert enrol(coordinator, "wr_" + "x" * 43)[0].status_code == 401
    with httpx.Client(base_url=coordinator.url, timeout=10) as h:
        assert h.post("/api/workers/enrol", json={"csr": "x"}).status_code == 401


def test_only_a_workers_admin_issues_registration_tokens(coordinator):
    with coordinator.client() as c:
        viewer = c.post("/api/admin/keys", json={"name": "v", "role": "viewer"}).json()["key"]
    with coordinator.client(viewer) as c:
        r = c.post("/api/admin/workers/registrations", json={"name": "x"})
    assert r.status_code == 403, r.text


def test_a_csr_that_is_not_one_is_refused_by_field(coordinator):
    for i, csr in enumerate(["not a csr", csr_for(ec.generate_private_key(ec.SECP256R1()))]):
        token = issue(coordinator, name=f"c{i}")
        with httpx.Client(base_url=coordinator.url, timeout=10) as h:
            r = h.post("/api/workers/enrol", json={"csr": csr},
                       headers={signing.REGISTRATION_TOKEN_HEADER: token})  # fmt: skip
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == "csr"


def test_a_signature_that_is_not_the_workers_is_refused(coordinator, enrolled):
    w, _ = enrolled
    other, _ = enrol(coordinator, issue(coordinator, name="other"))
    other_id = other.json()["worker_id"]
    assert w.request("POST", "/api/workers/register", REGISTER)[0].status_code == 200
    tries = {
        "another key": w.request("POST", "/api/workers/heartbeat", {"running": []},
                                 key=Ed25519PrivateKey.generate()),
        "another worker's id": w.request("POST", "/api/workers/heartbeat", {"running": []},
                                         sign_as=other_id),
        "a changed body": w.request("POST", "/api/workers/heartbeat", {"running": []},
                                    body=b'{"running": [], "constrained": "x"}'),
        "out of the window": w.request("POST", "/api/workers/heartbeat", {"running": []},
                                       skew=-(signing.WINDOW_S + 5)),
        "from the future": w.request("POST", "/api/workers/heartbeat", {"running": []},
                                     skew=signing.WINDOW_S + 5),
        "an unknown worker": w.request("POST", "/api/workers/heartbeat", {"running": []},
                                       sign_as="w_0000000000000000"),
    }  # fmt: skip
    for what, (r, _) in tries.items():
        assert r.status_code == 401, (what, r.status_code, r.text)
    with httpx.Client(base_url=coordinator.url, timeout=10) as h:
        r = h.post("/api/workers/heartbeat", json={"running": []},
                   headers={signing.SIGNATURE_HEADER: "worker=x;ts=1;nonce=00;sig=zz"})  # fmt: skip
    assert r.status_code == 401, r.text
    ok, _ = w.request("POST", "/api/workers/heartbeat", {"running": []})
    assert ok.status_code == 200, ok.text


def test_a_replayed_request_is_refused(coordinator, enrolled):
    w, _ = enrolled
    r, req = w.request("POST", "/api/workers/register", REGISTER)
    assert r.status_code == 200, r.text
    again = w.resend(req)
    assert again.status_code == 401 and "replay" in again.json()["detail"], again.text


def test_rotating_or_removing_a_worker_revokes_its_certificate_at_once(coordinator, enrolled):
    w, _ = enrolled
    assert w.request("POST", "/api/workers/register", REGISTER)[0].status_code == 200
    with coordinator.client() as c:
        assert c.post(f"/api/admin/workers/{w.worker_id}/token").status_code == 200
        assert c.get(f"/api/admin/workers/{w.worker_id}").json()["cert_expires_at"] is None
    r, _ = w.request("POST", "/api/workers/heartbeat", {"running": []})
    assert r.status_code == 401, r.text
    # Enrolled again (a new token for its name), then removed: refused again.
    r, key = enrol(coordinator, issue(coordinator))
    assert r.json()["worker_id"] == w.worker_id
    w.key = key
    assert w.request("POST", "/api/workers/disconnect")[0].status_code == 204
    with coordinator.client() as c:
        assert c.delete(f"/api/admin/workers/{w.worker_id}").status_code == 204
    assert w.request("POST", "/api/workers/register", REGISTER)[0].status_code == 401


def test_an_expired_certificate_is_refused(coordinator, enrolled):
    w, _ = enrolled
    assert w.request("POST", "/api/workers/register", REGISTER)[0].status_code == 200
    core = coordinator.app.state.core

    async def expire():
        async with core.store.tx() as conn:
            past = core.clock.now() - timedelta(seconds=1)
            await conn.execute(update(workers).where(workers.c.id == w.worker_id)
                               .values(cert_expires_at=past))  # fmt: skip
        core.credentials.forget_worker(w.worker_id)

    coordinator.call(expire())
    r, _ = w.request("POST", "/api/workers/heartbeat", {"running": []})
    assert r.status_code == 401 and "expired" in r.json()["detail"], r.text
    r, _ = w.request("POST", "/api/workers/renew", {"csr": csr_for(w.key)})
    assert r.status_code == 401, r.text


def test_another_tenants_registration_enrols_in_that_tenant_only(coordinator):
    with coordinator.client() as op:
        b = op.post("/api/admin/tenants", json={"name": "B"}).json()
    r, _ = enrol(coordinator, issue(coordinator, name="b-box", key=b["api_key"]))
    assert r.status_code == 201
    with coordinator.client(b["api_key"]) as c:
        assert [x["name"] for x in c.get("/api/admin/workers").json()["workers"]] == ["b-box"]
    with coordinator.client() as c:
        assert "b-box" not in c.get("/api/admin/workers").text
