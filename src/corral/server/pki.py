"""The coordinator's internal certificate authority, and the certificate it serves HTTPS with.

``corral server --ssl`` without a certificate of its own: on first start a CA is made in
``<data-dir>/pki/`` (``ca.key`` 0600, ``ca.pem``), and a server certificate signed by it
for the names the coordinator is reached by (localhost, 127.0.0.1, its host name, the
``--host`` it binds and any ``ssl_hosts``). Workers and the CLI trust ``ca.pem``
(``--ca-file``). The server certificate is made again at a start when it is within
``RENEW_BEFORE`` of its end, does not name every host asked for, or is not for the key
beside it (a crash between writing the two). Each file is written whole or not at all
(a file beside it, renamed over it); keys are 0600 from their creation. Keys are EC P-256.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from corral.config.private import private_dir, write_whole

CA_DAYS = 3650
SERVER_DAYS = 90
RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class ServerTLS:
    certfile: Path
    keyfile: Path
    ca_file: Path | None  # the internal CA's certificate, when it made the server's


def _write_private(path: Path, data: bytes) -> None:
    write_whole(path, data, 0o600)


def _same_key(cert: x509.Certificate, key: object) -> bool:
    """Whether ``cert`` is for ``key``: two files cannot be renamed at once, so a crash
    between writing a new key and its certificate leaves a pair that does not match."""
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return False
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])  # fmt: skip


def ensure_ca(pki: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA in ``pki``, made there if missing."""
    cert_path, key_path = pki / "ca.pem", pki / "ca.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_key(cert, key):
            # Not made again: clients trust this ca.pem. Someone replaced one of the two.
            raise ValueError(f"{key_path} is not the key of {cert_path}")
        return cert, key
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    name = _name(f"Corral CA {socket.gethostname()}"[:64])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    # The key first: a certificate without its key is made again, with a new key.
    _write_private(key_path, _key_pem(key))
    write_whole(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _sans(hosts: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in dict.fromkeys(h.strip() for h in hosts if h.strip()):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def default_hosts(bind_host: str, extra: Iterable[str] = ()) -> list[str]:
    """The names a coordinator is reached by: loopback, this machine's name, the address it
    binds (unless a wildcard) and what the operator adds."""
    hosts = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    if bind_host not in ("0.0.0.0", "::", ""):
        hosts.append(bind_host)
    return [*hosts, *extra]


def _still_good(
    path: Path, key_path: Path, sans: list[x509.GeneralName], ca: x509.Certificate
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        named = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return False
    return (cert.issuer == ca.subject and set(sans) <= set(named) and _same_key(cert, key)
            and cert.not_valid_after_utc - RENEW_BEFORE > datetime.now(UTC))  # fmt: skip


def server_tls(data_dir: Path, hosts: Iterable[str]) -> ServerTLS:
    """The internal CA's server certificate for ``hosts``, made or renewed as needed."""
    pki = private_dir(data_dir / "pki")
    ca, ca_key = ensure_ca(pki)
    cert_path, key_path = pki / "server.pem", pki / "server.key"
    sans = _sans(hosts)
    for stale in pki.glob(".*.tmp"):  # what a crash in the middle of a write left
        stale.unlink(missing_ok=True)
    if not _still_good(cert_path, key_path, sans, ca):
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Corral coordinator")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        _write_private(key_path, _key_pem(key))
        write_whole(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return ServerTLS(cert_path, key_path, pki / "ca.pem")


def worker_uri(tenant_id: str, worker_id: str) -> str:
    """The name a worker's certificate is bound to (its subject alternative name)."""
    return f"urn:corral:tenant:{tenant_id}:worker:{worker_id}"


def worker_certificate(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, public_key: Any,
    tenant_id: str, worker_id: str, not_after: datetime,
) -> x509.Certificate:  # fmt: skip
    """A client certificate for a worker's own key, bound to the worker and its tenant."""
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral"),
                         x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, tenant_id[:64]),
                         x509.NameAttribute(NameOID.COMMON_NAME, worker_id[:64])])  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(ca.subject).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(worker_uri(tenant_id, worker_id))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
