"""Workers that enrol with a certificate (VersoScale's flow), beside those given a token.

1. The holder of an API key with ``workers.admin`` asks for a single-use registration token
   for a worker it describes (name, labels, the labels it may set itself): ``issue``.
2. The worker makes its own Ed25519 key and trades the token and a CSR for that key for a
   certificate of the coordinator's internal CA, bound to its id and tenant: ``enrol``. The
   token is then used up; the worker's credential (``workers.token_hash``) is the key's
   fingerprint, so rotating it (a token instead) or removing the worker revokes the
   certificate at once, on every coordinator.
3. It signs every request with that key (``corral.protocol.signing``) and renews the
   certificate, for the same key, before it ends: ``renew``.

The worker's private key never leaves it; the coordinator keeps the certificate.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from corral.model import (
    InvalidInput,
    PermissionDenied,
    TenantStatus,
    Unauthenticated,
    decide,
)
from corral.model.changes import (
    Change,
    EndStream,
    InsertRegistration,
    Record,
    UpdateWorker,
    UseRegistration,
    Why,
)
from corral.model.history import Kind
from corral.protocol import (
    CertificateRequest,
    Enrolled,
    RegistrationIssued,
    WorkerCreate,
    signing,
)
from corral.server.auth import Identity, WorkerIdentity, hash_secret, new_id, new_secret
from corral.server.core import Core
from corral.server.pki import worker_certificate
from corral.store import keys as keys_q
from corral.store import workers as workers_q

REGISTRATION_PREFIX = "wr"


def _key_of(csr_pem: str) -> Ed25519PublicKey:
    """The CSR's key, if the CSR is well formed, signed by that key, and the key Ed25519."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError:
        raise InvalidInput("csr is not a PEM certificate signing request", field="csr") from None
    if not csr.is_signature_valid:
        raise InvalidInput("csr is not signed by the key it names", field="csr")
    key = csr.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput("csr must be for an Ed25519 key", field="csr")
    return key


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


async def issue(core: Core, who: Identity, body: WorkerCreate) -> RegistrationIssued:
    token = new_secret(REGISTRATION_PREFIX)
    async with core.tx(who.key_id) as t:
        expires = t.now + timedelta(seconds=core.settings.registration_ttl_s)
        await t.apply([InsertRegistration({
            "id": new_id("reg"), "tenant_id": who.tenant_id, "token_hash": hash_secret(token),
            "spec": body.model_dump(mode="json"), "created_by": who.key_id,
            "created_at": t.now, "expires_at": expires,
        }, Why(actor=who.key_id))])  # fmt: skip
    return RegistrationIssued(token=token, name=body.name, expires_at=expires)


def _certificate(core: Core, key: Ed25519PublicKey, tenant_id: str, worker_id: str,
                 now: datetime) -> tuple[str, datetime]:  # fmt: skip
    cert, ca_key = core.ca
    until = now + timedelta(seconds=core.settings.worker_cert_s)
    signed = worker_certificate(cert, ca_key, key, tenant_id, worker_id, until)
    return _pem(signed), signed.not_valid_after_utc


async def enrol(core: Core, token: str, body: CertificateRequest) -> Enrolled:
    """Trade a registration token and a CSR for a certificate. A worker of that name in the
    tenant is taken over (its old credentials stop at once, as a rotation's do); else it
    is created as the token describes."""
    async with core.tx() as t:
        reg = await workers_q.registration(t.conn, hash_secret(token.strip()))
        if reg is None or reg["used_at"] is not None:
            raise Unauthenticated("invalid registration token (each enrols once)")
        key = _key_of(body.csr)  # a refusal leaves the token unused
        fingerprint = signing.key_fingerprint(key)
        tenant_id: str = reg["tenant_id"]
        t.actor = reg["created_by"]
        tenant = await keys_q.tenant(t.conn, tenant_id, share=True)
        if tenant is None or tenant["status"] != TenantStatus.ACTIVE:
            raise PermissionDenied(f"tenant {tenant_id} is suspended")
        if await t.apply([UseRegistration(reg["id"], tenant_id, t.now)]):
            raise Unauthenticated("this registration token has expired or was used: ask for"
                                  " another (corral workers enrol NAME)")  # fmt: skip
        spec = WorkerCreate.model_validate(reg["spec"])
        existing = next((r for r in await workers_q.all_of(t.conn, tenant_id)
                         if r["name"] == spec.name), None)  # fmt: skip
        worker_id = existing["id"] if existing is not None else new_id("w")
        pem, expires = _certificate(core, key, tenant_id, worker_id, t.now)
        admin = {
            "admin_labels": spec.labels, "worker_type": spec.worker_type.value,
            "allowed_labels": list(dict.fromkeys(spec.allow_labels)), "local": spec.local,
            "shared": False,
        }  # fmt: skip
        credential = {"token_hash": fingerprint, "cert_pem": pem, "cert_expires_at": expires}
        changes: list[Change]
        if existing is None:
            changes = decide.create_worker({
                "id": worker_id, "tenant_id": tenant_id, "name": spec.name, **admin,
                "labels": spec.labels, "gpus": [], "slots": 1, "created_at": t.now,
                "offline_since": t.now, **credential,
            }, actor=reg["created_by"])  # fmt: skip
        else:
            changes = [UpdateWorker(worker_id, {**admin, **credential}), EndStream(worker_id)]
        changes.append(Record(Kind.WORKER_ENROLLED, tenant_id, worker_id=worker_id,
                              why=_why(reg, expires)))  # fmt: skip
        await t.apply(changes)
    core.credentials.forget_worker(worker_id)
    return Enrolled(worker_id=worker_id, name=spec.name, certificate=pem,
                    ca_certificate=_pem(core.ca[0]), expires_at=expires,
                    server_time=core.clock.now())  # fmt: skip


def _why(reg: Any, expires: datetime) -> Why:
    return Why(actor=reg["created_by"], detail={
        "registration_id": reg["id"], "certificate_expires_at": expires.isoformat()})  # fmt: skip


async def renew(core: Core, w: WorkerIdentity, body: CertificateRequest) -> Enrolled:
    """A new certificate for the key the worker holds (the same key: its requests in flight,
    signed with it, still pass). To change keys, it enrols again."""
    key = _key_of(body.csr)
    if signing.key_fingerprint(key) != w.token_hash:
        raise InvalidInput("csr must be for the key this worker enrolled with; to change"
                           " keys, enrol again", field="csr")  # fmt: skip
    async with core.tx(w.worker_id) as t:
        row = await core.credentials.verify(t.conn, w, lock=True)
        if row["cert_pem"] is None:
            raise InvalidInput("this worker holds a token, not a certificate", field="csr")
        pem, expires = _certificate(core, key, w.tenant_id, w.worker_id, t.now)
        await t.apply([
            UpdateWorker(w.worker_id, {"cert_pem": pem, "cert_expires_at": expires}),
            Record(Kind.WORKER_CERT_RENEWED, w.tenant_id, worker_id=w.worker_id,
                   why=Why(detail={"certificate_expires_at": expires.isoformat()})),
        ])  # fmt: skip
    core.credentials.forget_worker(w.worker_id)
    return Enrolled(worker_id=w.worker_id, name=row["name"], certificate=pem,
                    ca_certificate=_pem(core.ca[0]), expires_at=expires,
                    server_time=core.clock.now())  # fmt: skip
