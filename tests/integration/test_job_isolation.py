"""A worker run as root with --run-as-users: each attempt a Unix user of its own, its
directory its own, the worker's journal out of reach, and nothing it started left running.
Jobs here are shell commands: they must not depend on where the repository is checked out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from harness import start_coordinator

from corral.client import Client

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0, reason="needs root on Linux"
)
FIRST, LAST = 20000, 20004


@pytest.fixture
def fleet(tmp_path):
    coord, stop = start_coordinator(tmp_path / "server", f"sqlite:///{tmp_path / 'c.db'}")
    # The attempts' users must be able to reach the data directory: pytest's are 0700.
    data = Path(tempfile.mkdtemp(prefix="corral-iso-", dir="/tmp"))
    data.chmod(0o711)
    client = Client(coord.url, coord.admin_key)
    token = client.create_worker("iso", persistent=True).token
    worker = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url", coord.url,
         "--persistent", "--max-concurrent-tasks", "2", "--run-as-users", f"{FIRST}-{LAST}",
         "--data-dir", str(data / "w")],
        env={**os.environ, "CORRAL_WORKER__TOKEN": token},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield client, data / "w"
    finally:
        worker.terminate()
        worker.wait(30)
        client.close()
        stop()
        shutil.rmtree(data, ignore_errors=True)


def run(client, script, **kw):
    return client.submit(["/bin/sh", "-c", script], **kw)


def output(client, job_id):
    return "\n".join(client.logs(job_id))


def test_each_attempt_is_a_user_of_its_own_that_cannot_reach_another(fleet):
    client, work = fleet
    holder = run(client, "echo the-secret > secret.txt; id -u; sleep 5")
    deadline = time.monotonic() + 30
    while client.job(holder.id).state != "running":
        assert time.monotonic() < deadline, client.job(holder.id)
        time.sleep(0.1)
    time.sleep(0.5)
    prober = run(client, f"""id -u
for d in {work}/attempts/*; do
  cat "$d/secret.txt"; echo '{{"forged": 1}}' > "$d/.corral/result.json"
done
ls {work}/attempts && echo LISTED
cat {work}/journal.sqlite3 > /dev/null && echo JOURNAL-READ
kill -0 $(pgrep -f 'sleep 5' | head -1) && echo SIGNALLED
exit 0""")  # fmt: skip
    assert client.wait(prober.id, timeout=60).state == "succeeded"
    done = client.wait(holder.id, timeout=60)
    assert done.state == "succeeded" and done.result is None  # no forged result
    seen = output(client, prober.id)
    assert "the-secret" not in seen and "Permission denied" in seen, seen
    for mark in ("LISTED", "JOURNAL-READ", "SIGNALLED"):
        assert mark not in seen, seen
    uids = {int(output(client, j.id).split()[0]) for j in (holder, prober)}
    assert len(uids) == 2 and all(FIRST < u <= LAST for u in uids), uids


def test_what_an_attempt_leaves_running_is_killed_when_it_ends(fleet):
    client, _ = fleet
    job = run(client, "setsid sh -c 'exec sleep 300' > /dev/null 2>&1 & id -u")
    assert client.wait(job.id, timeout=60).state == "succeeded"
    uid = int(output(client, job.id).split()[0])
    deadline = time.monotonic() + 15
    while True:
        left = [p for p in psutil.process_iter(["uids"]) if p.info["uids"].real == uid]
        if not left:
            break
        assert time.monotonic() < deadline, f"still running as {uid}: {left}"
        time.sleep(0.2)


def test_a_range_too_small_for_the_slots_is_a_usage_error(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url", "http://127.0.0.1:9",
         "--max-concurrent-tasks", "4", "--run-as-users", "20000-20002",
         "--data-dir", str(tmp_path / "w")],
        env={**os.environ, "CORRAL_WORKER__TOKEN": "wt_x"}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "one per slot" in r.stderr, r.stderr
