"""Workers that enrol with a certificate, as real processes: with an API key or a
registration token, keeping their key to themselves, renewing before the certificate ends,
coming back after a restart as the same worker, and leaving once revoked."""

from __future__ import annotations

import json
import stat

from harness_e2e import ADMIN_KEY, wait_until

from corral.client import NotFound


def _events(fleet, name):
    try:
        return [e.kind for e in fleet.calls.worker_events(name)]
    except NotFound:  # not enrolled yet
        return []


def test_a_worker_enrols_with_an_api_key_and_comes_back_as_itself(fleet):
    fleet.start_server()
    w = fleet.start_worker("enrolled", CORRAL_WORKER__API_KEY=ADMIN_KEY)
    job = fleet.submit(["sh", "-c", "env; echo done"])
    assert fleet.wait_state(job["id"], {"succeeded", "failed"}, 60)["state"] == "succeeded"
    log = fleet.logs(job["id"])
    assert "done" in log and ADMIN_KEY not in log  # the key is not the job's
    first = fleet.workers()["enrolled"]
    assert first["cert_expires_at"] is not None
    # Its key is in its memory only, as the API key is: nothing a job could read on disk.
    assert not (fleet.root / "worker-enrolled" / "identity").exists()

    assert w.term() == 0
    fleet.start_worker("enrolled", CORRAL_WORKER__API_KEY=ADMIN_KEY)
    job = fleet.submit(["true"])
    assert fleet.wait_state(job["id"], {"succeeded", "failed"}, 60)["state"] == "succeeded"
    assert [x["id"] for x in fleet.workers().values()] == [first["id"]]  # the same worker
    assert _events(fleet, "enrolled").count("worker.enrolled") == 2  # the same name, taken over


def test_a_registration_token_enrols_a_worker_that_renews_and_leaves_when_revoked(fleet):
    fleet.start_server(CORRAL_SERVER__WORKER_CERT_S="6")
    issued = fleet.calls.registration("box", persistent=True)
    w = fleet.start_worker("box", CORRAL_WORKER__REGISTRATION_TOKEN=issued.token)
    ident = fleet.root / "worker-box" / "identity"
    wait_until(lambda: (ident / "identity.json").exists(), 30, "the worker to enrol")
    assert stat.S_IMODE(ident.stat().st_mode) == 0o700
    assert stat.S_IMODE((ident / "worker.key").stat().st_mode) == 0o600
    facts = json.loads((ident / "identity.json").read_text())
    assert facts["worker_id"] == fleet.workers()["box"]["id"]
    wait_until(lambda: _events(fleet, "box").count("worker.certificate_renewed") >= 3, 30,
               "the certificate to be renewed, again and again")  # fmt: skip
    # Restarted with its used token: it renews what it holds and is the same worker.
    assert w.term() == 0
    w = fleet.start_worker("box", CORRAL_WORKER__REGISTRATION_TOKEN=issued.token)
    job = fleet.submit(["true"])
    assert fleet.wait_state(job["id"], {"succeeded", "failed"}, 60)["state"] == "succeeded"
    assert [x["id"] for x in fleet.workers().values()] == [facts["worker_id"]]

    fleet.calls.rotate_token("box")  # its certificate is revoked with it
    assert w.wait(30) == 2
    assert "worker.token_refused" in w.output() or "refused" in w.output()
    # Its used registration token does not bring it back, nor does the certificate it holds.
    again = fleet.start_worker("box", CORRAL_WORKER__REGISTRATION_TOKEN=issued.token)
    assert again.wait(30) == 2
    assert "enrol it again" in again.output(), again.output()[-2000:]
