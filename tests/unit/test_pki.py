"""The internal CA's files: each written whole, and a server key never served with a
certificate that is not its own, whatever a crash between writing the two left."""

from __future__ import annotations

import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from corral.server import pki

HOSTS = ["localhost", "127.0.0.1"]


def _serves(tls: pki.ServerTLS) -> None:
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(tls.certfile, tls.keyfile)


def test_a_new_key_left_without_its_certificate_is_made_again_with_one(tmp_path: Path) -> None:
    first = pki.server_tls(tmp_path, HOSTS)
    _serves(first)
    # A crash after the new key was written and before its certificate was.
    new_key = ec.generate_private_key(ec.SECP256R1())
    first.keyfile.write_bytes(pki._key_pem(new_key))
    again = pki.server_tls(tmp_path, HOSTS)
    _serves(again)  # the old certificate with the new key would fail here
    assert stat.S_IMODE(os.stat(again.keyfile).st_mode) == 0o600
    # A pair that matches is kept as it is.
    cert = again.certfile.read_bytes()
    assert pki.server_tls(tmp_path, HOSTS).certfile.read_bytes() == cert


def test_a_write_cut_short_leaves_the_old_file_and_no_part_of_the_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = pki.server_tls(tmp_path, HOSTS)
    before = {p.name: p.read_bytes() for p in tls.keyfile.parent.iterdir()}

    def crash(src: object, dst: object) -> None:
        raise OSError("the machine went down")

    monkeypatch.setattr(os, "replace", crash)
    tls.certfile.unlink()  # so that it is made again, and its write fails
    with pytest.raises(OSError):
        pki.server_tls(tmp_path, HOSTS)
    monkeypatch.undo()
    left = {p.name: p.read_bytes() for p in tls.keyfile.parent.iterdir()}
    assert left == {k: v for k, v in before.items() if k != "server.pem"}
    _serves(pki.server_tls(tmp_path, HOSTS))


def test_a_ca_whose_key_is_not_its_own_stops_the_start(tmp_path: Path) -> None:
    pki.server_tls(tmp_path, HOSTS)
    other = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "pki" / "ca.key").write_bytes(pki._key_pem(other))
    with pytest.raises(ValueError, match="is not the key of"):
        pki.server_tls(tmp_path, HOSTS)
