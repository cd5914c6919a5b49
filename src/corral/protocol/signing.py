"""Signed worker requests: how a worker enrolled with a certificate proves, on every request,
that it holds the certificate's key, and how a captured request is kept from being replayed.

The signature covers the method, the path with its query, the worker's id, a timestamp, a
nonce and the SHA-256 of the body, so that nothing of what a request asks for can be changed
and nothing can be sent twice. It travels in one header::

    X-Corral-Signature: worker=w_…;ts=1764763200;nonce=<32 hex>;sig=<base64url>

The coordinator verifies it against the public key of the certificate it stored at
enrolment (not one the client presents: uvicorn does not hand a TLS peer certificate to the
application, and a stored key is revoked by changing one row), refuses it outside
``WINDOW_S`` of its own clock, and refuses a nonce it has seen within that window, on every
coordinator of the store. Keys are Ed25519: small, fast, and deterministic to sign with.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "REGISTRATION_TOKEN_HEADER",
    "SIGNATURE_HEADER",
    "WINDOW_S",
    "BadSignature",
    "Signed",
    "key_fingerprint",
    "parse",
    "sign",
    "verify",
]

SIGNATURE_HEADER = "X-Corral-Signature"
REGISTRATION_TOKEN_HEADER = "X-Registration-Token"
WINDOW_S = 60  # a signed request is taken within this many seconds of the coordinator's clock
_VERSION = b"corral-worker-request-v1"
_HEADER = re.compile(
    r"worker=(?P<worker>[A-Za-z0-9_\-]{1,64});ts=(?P<ts>\d{1,12});"
    r"nonce=(?P<nonce>[0-9a-f]{32});sig=(?P<sig>[A-Za-z0-9_\-]{86})"
)


class BadSignature(ValueError):
    """The header is malformed, or the signature is not the key's over this request."""


@dataclass(frozen=True, slots=True)
class Signed:
    """What a signature header says, before it is checked."""

    worker_id: str
    ts: int
    nonce: str
    sig: bytes


def key_fingerprint(public_key: Ed25519PublicKey) -> str:
    """What the coordinator stores as the worker's credential (``workers.token_hash``):
    64 hex characters, as a token's hash, but never the hash of any token (its input begins
    with a tag no token has), so neither kind of credential can pass for the other."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(b"corral worker key\0" + der).hexdigest()


def _message(method: str, target: str, s: Signed, body: bytes) -> bytes:
    return b"\n".join([
        _VERSION, method.upper().encode(), target.encode(), s.worker_id.encode(),
        str(s.ts).encode(), s.nonce.encode(), hashlib.sha256(body).hexdigest().encode(),
    ])  # fmt: skip


def sign(
    key: Ed25519PrivateKey, worker_id: str, method: str, target: str, body: bytes, now: float
) -> str:
    """The header value for a request to ``target`` (its path and query, as sent)."""
    s = Signed(worker_id, int(now), secrets.token_hex(16), b"")
    sig = key.sign(_message(method, target, s, body))
    encoded = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    return f"worker={worker_id};ts={s.ts};nonce={s.nonce};sig={encoded}"


def parse(header: str) -> Signed:
    m = _HEADER.fullmatch(header.strip())
    if m is None:
        raise BadSignature(f"{SIGNATURE_HEADER} is not worker=…;ts=…;nonce=…;sig=…")
    sig = base64.urlsafe_b64decode(m["sig"] + "==")
    return Signed(m["worker"], int(m["ts"]), m["nonce"], sig)


def verify(public_key: Ed25519PublicKey, s: Signed, method: str, target: str, body: bytes) -> None:
    """Raises BadSignature unless ``s`` is the key's signature over this request."""
    try:
        public_key.verify(s.sig, _message(method, target, s, body))
    except InvalidSignature as exc:
        raise BadSignature("the request's signature is not its worker's") from exc
