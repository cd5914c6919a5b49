"""HTTPS from the coordinator's internal CA: made once in the data directory, trusted by
the client, the CLI and a real worker with --ca-file, and refused by whoever does not."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import structlog
from harness import start_coordinator
from typer.testing import CliRunner

from corral.cli._logging import Level, configure
from corral.cli.main import app
from corral.client import Client, Unreachable
from corral.protocol.transport import insecure


@pytest.fixture
def tls(tmp_path):
    c, stop = start_coordinator(tmp_path / "server", f"sqlite:///{tmp_path / 'c.db'}", ssl=True)
    try:
        yield c
    finally:
        stop()


def trusting(coord):
    return ssl.create_default_context(cafile=str(coord.data_dir / "pki" / "ca.pem"))


def test_the_internal_ca_is_made_once_and_its_keys_are_private(tls, tmp_path):
    pki = tls.data_dir / "pki"
    assert tls.url.startswith("https://")
    assert pki.stat().st_mode & 0o777 == 0o700
    for key in ("ca.key", "server.key"):
        assert (pki / key).stat().st_mode & 0o777 == 0o600, key
    with httpx.Client(base_url=tls.url, verify=trusting(tls)) as h:
        assert h.get("/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls.url + "/healthz")  # the system's store does not know this CA
    # The plain http:// of the same port is no way in.
    with pytest.raises(httpx.HTTPError):
        httpx.get(tls.url.replace("https://", "http://") + "/healthz", timeout=5)


def test_a_restart_keeps_the_ca_and_its_certificate(tmp_path):
    db = f"sqlite:///{tmp_path / 'c.db'}"
    first, stop = start_coordinator(tmp_path / "server", db, ssl=True)
    ca = (first.data_dir / "pki" / "ca.pem").read_bytes()
    cert = (first.data_dir / "pki" / "server.pem").read_bytes()
    stop()
    second, stop = start_coordinator(tmp_path / "server", db, ssl=True)
    try:
        assert (second.data_dir / "pki" / "ca.pem").read_bytes() == ca
        assert (second.data_dir / "pki" / "server.pem").read_bytes() == cert
        with httpx.Client(base_url=second.url, verify=trusting(first)) as h:
            assert h.get("/healthz").status_code == 200
    finally:
        stop()


def test_an_operators_own_certificate_is_served(tls, tmp_path):
    pki = tls.data_dir / "pki"
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(pki / "server.pem", mine / "cert.pem")
    shutil.copy(pki / "server.key", mine / "key.pem")
    given = {"ssl_certfile": mine / "cert.pem", "ssl_keyfile": mine / "key.pem"}
    c, stop = start_coordinator(tmp_path / "other", f"sqlite:///{tmp_path / 'o.db'}", **given)
    try:
        # Its CA is made for workers' certificates; the server's certificate is the operator's.
        assert c.url.startswith("https://") and not (c.data_dir / "pki" / "server.pem").exists()
        with httpx.Client(base_url=c.url, verify=trusting(tls)) as h:
            assert h.get("/healthz").status_code == 200
    finally:
        stop()


def test_the_client_trusts_the_ca_it_is_given_and_nothing_else(tls):
    ca = tls.data_dir / "pki" / "ca.pem"
    with Client(tls.url, tls.admin_key, ca_file=ca) as c:
        assert c.healthy() and c.jobs(limit=1) is not None
        assert list(c.jobs()) == []
    with Client(tls.url, tls.admin_key, attempts=1, retry_timeout=1) as c:
        with pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
            list(c.jobs())
    with Client(tls.url, tls.admin_key, verify=False) as c:
        assert list(c.jobs()) == []


def test_the_cli_takes_a_ca_file_and_says_what_to_do_without_one(tls):
    configure(Level.ERROR, stream=sys.__stderr__)
    runner = CliRunner()
    env = {"CORRAL_URL": tls.url, "CORRAL_API_KEY": tls.admin_key}
    ca = str(tls.data_dir / "pki" / "ca.pem")
    try:
        ok = runner.invoke(app, ["--ca-file", ca, "jobs", "ls", "--json"], env=env)
        assert ok.exit_code == 0, ok.output
        refused = runner.invoke(app, ["jobs", "ls"], env=env)
        assert refused.exit_code == 4 and "--ca-file" in refused.stderr
        loose = runner.invoke(app, ["--ssl-no-verify", "jobs", "ls"], env=env)
        assert loose.exit_code == 0 and "verification is off" in loose.stderr
        ok = runner.invoke(app, ["jobs", "ls"], env={**env, "CORRAL_CA_FILE": ca})
        assert ok.exit_code == 0, ok.output
    finally:
        structlog.reset_defaults()


def test_a_real_worker_runs_a_job_over_https_with_the_ca_file(tls, tmp_path):
    with Client(tls.url, tls.admin_key, ca_file=tls.data_dir / "pki" / "ca.pem") as c:
        token = c.create_worker("w1", persistent=True).token
        env = {**os.environ, "CORRAL_WORKER__TOKEN": token}
        worker = subprocess.Popen(
            [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url", tls.url,
             "--ca-file", str(tls.data_dir / "pki" / "ca.pem"), "--persistent",
             "--data-dir", str(tmp_path / "w")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            job = c.submit(["python", "-c", "print('over tls')"])
            done = c.wait(job.id, timeout=60)
            assert done.state == "succeeded", done
            assert "over tls" in "\n".join(c.logs(job.id))
        finally:
            worker.terminate()
            _, err = worker.communicate(timeout=30)
        assert "insecure" not in err


def test_plain_http_on_a_network_and_no_verification_are_warned_of():
    assert insecure("http://127.0.0.1:8001,http://localhost:1,https://coord:8001") == []
    said = insecure("http://10.0.0.5:8001")
    assert len(said) == 1 and "in the clear" in said[0]
    assert any("verification is off" in s for s in insecure("https://coord", verify=False))


def test_a_worker_warns_of_plain_http_to_another_machine(tmp_path):
    env = {**os.environ, "CORRAL_WORKER__TOKEN": "wt_x"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url",
         "http://192.0.2.1:9", "--data-dir", str(tmp_path / "w")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline, seen = time.monotonic() + 30, ""
        assert worker.stdout is not None
        while "worker.insecure" not in seen and time.monotonic() < deadline:
            seen += worker.stdout.readline()
        assert "in the clear" in seen, seen
    finally:
        worker.kill()
        worker.wait()


def test_half_a_certificate_is_a_setting_error(tmp_path):
    from pydantic import ValidationError

    from corral.server.config import ServerSettings

    with pytest.raises(ValidationError, match="go together"):
        ServerSettings(ssl_certfile=Path("/x.pem"))
