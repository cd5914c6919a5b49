"""A worker enrolled with a certificate: its own key, the certificate the coordinator signed
for it, and the signature it puts on every request (docs/SECURITY.md).

``corral worker --api-key KEY`` asks for a single-use registration token with the key, or
``--registration-token T`` brings one an admin made (``corral workers enrol NAME``); the
worker makes an Ed25519 key and sends a CSR for it. The key is never sent.

Where it is kept: a worker with an API key keeps its key in memory only, as it keeps the API
key (the process is undumpable, its environment scrubbed), and enrols anew at each start,
taking over its own name: the same worker. A worker enrolled with a registration token has
nothing to enrol with again, so it keeps what it got in ``<data-dir>/identity/`` (the key
0600 in a 0700 directory); a later start renews the certificate first, which also tells it
whether the certificate still holds, and says so and exits when it is refused. A job running
as the worker's own user can read that file: run such a worker with ``--run-as-users`` (as
root), so that jobs run as others (docs/SECURITY.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from corral.config.private import private_dir, write_whole
from corral.model import WorkerType
from corral.model.errors import CorralError, Unauthenticated
from corral.protocol import (
    CertificateRequest,
    Enrolled,
    RegistrationIssued,
    WorkerCreate,
    signing,
)
from corral.protocol.transport import Transport
from corral.worker.config import WorkerSettings

__all__ = ["EnrolmentRefused", "Held", "SignedAuth", "ensure", "renew_loop"]

log = structlog.get_logger("corral.worker.identity")

RENEW_AT = 2 / 3  # of a certificate's life, it is renewed


class EnrolmentRefused(Exception):
    """The coordinator will not give this worker a certificate: the key or registration
    token is wrong, used or expired, or the certificate it holds was revoked."""


@dataclass
class Held:
    """What the worker holds: read by the signer on every request, renewed in place."""

    worker_id: str
    name: str
    key: Ed25519PrivateKey
    certificate: str
    expires_at: datetime
    issued_at: datetime  # the coordinator's clock when it signed
    offset_s: float  # the coordinator's clock minus ours, when it last answered
    received_mono: float  # our monotonic clock then

    def renew_in_s(self) -> float:
        """Seconds from now until it is due to be renewed."""
        life = (self.expires_at - self.issued_at).total_seconds()
        return max(0.0, self.received_mono + life * RENEW_AT - time.monotonic())

    @classmethod
    def of(cls, key: Ed25519PrivateKey, answer: Enrolled) -> Held:
        """What an enrolment answered, for ``key``."""
        held = cls(answer.worker_id, answer.name, key, "", answer.expires_at, answer.server_time,
                   0.0, 0.0)  # fmt: skip
        held.take(answer)
        return held

    def take(self, answer: Enrolled) -> None:
        self.worker_id, self.name = answer.worker_id, answer.name
        self.certificate, self.expires_at = answer.certificate, answer.expires_at
        self.issued_at = answer.server_time
        self.offset_s = answer.server_time.timestamp() - time.time()
        self.received_mono = time.monotonic()


class SignedAuth(httpx.Auth):
    """Signs each request as it is sent (each retry anew: a fresh nonce and time)."""

    requires_request_body = True

    def __init__(self, held: Held | None = None) -> None:
        self.held = held  # set once enrolled (``ensure``), before the first request

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        h = self.held
        if h is None:
            raise RuntimeError("a signed request before the worker enrolled")
        request.headers[signing.SIGNATURE_HEADER] = signing.sign(
            h.key, h.worker_id, request.method, request.url.raw_path.decode("ascii"),
            request.content, time.time() + h.offset_s,
        )  # fmt: skip
        yield request


# ---- on disk ------------------------------------------------------------------------


def _dir(settings: WorkerSettings) -> Path:
    return settings.work_dir / "identity"


def _save(settings: WorkerSettings, held: Held, ca_pem: str | None = None) -> None:
    """Only for a worker without an API key (it enrols anew at each start). Best effort: a
    worker whose disk is full goes on with what it holds in memory (its next start renews
    the certificate on disk)."""
    if settings.api_key is not None:
        return
    try:
        _write_all(settings, held, ca_pem)
    except OSError as exc:
        log.warning("identity.not_saved", dir=str(_dir(settings)), error=str(exc))


def _write_all(settings: WorkerSettings, held: Held, ca_pem: str | None) -> None:
    d = private_dir(_dir(settings))
    key_pem = held.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())  # fmt: skip
    write_whole(d / "worker.key", key_pem, 0o600)
    write_whole(d / "worker.pem", held.certificate.encode(), 0o644)
    if ca_pem is not None:
        write_whole(d / "ca.pem", ca_pem.encode(), 0o644)
    facts = {"worker_id": held.worker_id, "name": held.name,
             "expires_at": held.expires_at.isoformat(), "issued_at": held.issued_at.isoformat(),
             "coordinator": settings.orchestrator_url}  # fmt: skip
    write_whole(d / "identity.json", json.dumps(facts).encode(), 0o600)


def _load(settings: WorkerSettings) -> Held | None:
    d = _dir(settings)
    try:
        facts = json.loads((d / "identity.json").read_text())
        key = serialization.load_pem_private_key((d / "worker.key").read_bytes(), password=None)
        cert_pem = (d / "worker.pem").read_text()
        x509.load_pem_x509_certificate(cert_pem.encode())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("identity.unreadable", dir=str(d), error=str(exc), hint="enrolling again")
        return None
    if not isinstance(key, Ed25519PrivateKey):
        return None
    return Held(facts["worker_id"], facts["name"], key, cert_pem,
                datetime.fromisoformat(facts["expires_at"]),
                datetime.fromisoformat(facts["issued_at"]), 0.0, time.monotonic())  # fmt: skip


def _csr(key: Ed25519PrivateKey, name: str) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64] or "worker")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, None)
    return csr.public_bytes(serialization.Encoding.PEM).decode()


# ---- the calls ----------------------------------------------------------------------


async def ensure(settings: WorkerSettings, transport_kw: dict[str, Any]) -> Held:
    """The identity to sign with: a new enrolment (with an API key), or the one held,
    renewed. Raises EnrolmentRefused, or what the transport raised (Unreachable: try again
    later)."""
    if settings.api_key is not None:
        return await _enrol(settings, transport_kw)
    held = _load(settings)
    if held is None:
        return await _enrol(settings, transport_kw)
    try:
        await _renew(settings, held, transport_kw)
    except Unauthenticated as exc:
        raise EnrolmentRefused(
            f"the certificate this worker holds is refused ({exc}): enrol it again"
            " (corral workers enrol NAME, then --registration-token), or start it"
            " with --api-key"
        ) from exc
    log.info("identity.renewed", worker_id=held.worker_id, expires_at=held.expires_at)
    return held


async def _enrol(settings: WorkerSettings, transport_kw: dict[str, Any]) -> Held:
    async with Transport(settings.orchestrator_url, **transport_kw) as t:
        try:
            token = await _registration_token(settings, t)
            key = Ed25519PrivateKey.generate()
            body = CertificateRequest(csr=_csr(key, settings.worker_name))
            data = await t.json("POST", "/api/workers/enrol", json=body.model_dump(),
                                headers={signing.REGISTRATION_TOKEN_HEADER: token},
                                idempotent=False)  # fmt: skip
        except CorralError as exc:
            if exc.status in (401, 403):
                raise EnrolmentRefused(f"enrolment refused: {exc}") from exc
            raise
    answer = Enrolled.model_validate(data)
    held = Held.of(key, answer)
    _save(settings, held, answer.ca_certificate)
    log.info("identity.enrolled", worker_id=held.worker_id, expires_at=held.expires_at)
    return held


async def _registration_token(settings: WorkerSettings, t: Transport) -> str:
    if settings.registration_token is not None:
        return settings.registration_token.get_secret_value()
    if settings.api_key is None:
        raise EnrolmentRefused("no credentials: give --api-key, --registration-token or a token")
    kind = WorkerType.PERSISTENT if settings.persistent else WorkerType.EPHEMERAL
    spec = WorkerCreate(name=settings.worker_name, labels=settings.labels, worker_type=kind)
    bearer = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    data = await t.json("POST", "/api/admin/workers/registrations", headers=bearer,
                        json=spec.model_dump(mode="json"), idempotent=False)  # fmt: skip
    return RegistrationIssued.model_validate(data).token


async def _renew(settings: WorkerSettings, held: Held, transport_kw: dict[str, Any]) -> None:
    async with Transport(settings.orchestrator_url, auth=SignedAuth(held), **transport_kw) as t:
        body = CertificateRequest(csr=_csr(held.key, held.name))
        data = await t.json("POST", "/api/workers/renew", json=body.model_dump(), idempotent=True)
    held.take(Enrolled.model_validate(data))
    _save(settings, held)


async def renew_loop(settings: WorkerSettings, held: Held, transport_kw: dict[str, Any]) -> None:
    """Renew the certificate at two thirds of its life, for ever; a refusal (revoked) raises
    Unauthenticated, anything else is tried again before the certificate ends."""
    while True:
        await asyncio.sleep(max(1.0, held.renew_in_s()))
        try:
            await _renew(settings, held, transport_kw)
            log.info("identity.renewed", expires_at=held.expires_at)
        except Unauthenticated:
            raise
        except CorralError as exc:
            left = (held.expires_at - datetime.now(held.expires_at.tzinfo)).total_seconds()
            log.warning("identity.renew_failed", error=str(exc), expires_in_s=round(left))
            await asyncio.sleep(max(1.0, min(30.0, left / 4)))  # then at once: it is due
