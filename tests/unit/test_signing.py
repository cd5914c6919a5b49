"""The signature on a worker's request: what it covers, and what it refuses to parse."""

from __future__ import annotations

import hashlib
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from corral.protocol import signing


def test_a_signature_covers_every_part_of_the_request():
    key = Ed25519PrivateKey.generate()
    now = time.time()
    header = signing.sign(key, "w_1", "POST", "/api/workers/reports?x=1", b"{}", now)
    s = signing.parse(header)
    assert (s.worker_id, s.ts) == ("w_1", int(now)) and len(s.nonce) == 32
    signing.verify(key.public_key(), s, "POST", "/api/workers/reports?x=1", b"{}")
    changed = [("GET", "/api/workers/reports?x=1", b"{}"), ("POST", "/api/workers/reports", b"{}"),
               ("POST", "/api/workers/reports?x=1", b"{ }")]  # fmt: skip
    for method, target, body in changed:
        with pytest.raises(signing.BadSignature):
            signing.verify(key.public_key(), s, method, target, body)
    for other in (signing.Signed("w_2", s.ts, s.nonce, s.sig),
                  signing.Signed("w_1", s.ts + 1, s.nonce, s.sig),
                  signing.Signed("w_1", s.ts, "0" * 32, s.sig)):  # fmt: skip
        with pytest.raises(signing.BadSignature):
            signing.verify(key.public_key(), other, "POST", "/api/workers/reports?x=1", b"{}")
    with pytest.raises(signing.BadSignature):
        signing.verify(Ed25519PrivateKey.generate().public_key(), s, "POST",
                       "/api/workers/reports?x=1", b"{}")  # fmt: skip


@pytest.mark.parametrize("header", [
    "", "worker=w_1", "worker=w_1;ts=1;nonce=00;sig=x", "worker=w 1;ts=1;nonce=" + "0" * 32
    + ";sig=" + "A" * 86, "worker=w_1;ts=-1;nonce=" + "0" * 32 + ";sig=" + "A" * 86,
    "worker=w_1;ts=1;nonce=" + "G" * 32 + ";sig=" + "A" * 86,
])  # fmt: skip
def test_a_malformed_header_is_refused(header):
    with pytest.raises(signing.BadSignature):
        signing.parse(header)


def test_a_key_fingerprint_is_never_a_tokens_hash():
    key = Ed25519PrivateKey.generate().public_key()
    fp = signing.key_fingerprint(key)
    assert len(fp) == 64 and fp == signing.key_fingerprint(key)
    assert fp != signing.key_fingerprint(Ed25519PrivateKey.generate().public_key())
    # Tagged: not the plain hash of the key's bytes, which a "token" of those bytes would have.
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)  # fmt: skip
    assert fp != hashlib.sha256(der).hexdigest()
