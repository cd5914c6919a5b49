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
FIRST, LAST = 23000, 23004  # each test below has a range of its own: none overlaps another


def start_worker(coord_url, token, data, uids, *, slots=2, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url", coord_url,
         "--persistent", "--max-concurrent-tasks", str(slots), "--run-as-users", uids,
         "--data-dir", str(data)],
        env={**os.environ, "CORRAL_WORKER__TOKEN": token},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **kw,
    )  # fmt: skip


def stop_worker(worker):
    worker.terminate()
    try:
        worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait(10)


@pytest.fixture
def site(tmp_path):
    """A coordinator, and a root-owned place for workers' data (traversable by others, as
    /var/lib is: pytest's own folders are 0700)."""
    coord, stop = start_coordinator(tmp_path / "server", f"sqlite:///{tmp_path / 'c.db'}")
    data = Path(tempfile.mkdtemp(prefix="corral-iso-", dir="/tmp"))
    data.chmod(0o711)
    client = Client(coord.url, coord.admin_key)
    try:
        yield coord, client, data
    finally:
        client.close()
        stop()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def fleet(site):
    coord, client, data = site
    token = client.create_worker("iso", persistent=True).token
    worker = start_worker(coord.url, token, data / "w", f"{FIRST}-{LAST}")
    try:
        yield client, data / "w"
    finally:
        stop_worker(worker)


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


# ---- a job that points the worker's reads elsewhere ----------------------------------------


@pytest.fixture
def secrets(fleet):
    """Files only root may read, beside the worker's data: what a job must never be sent."""
    client, work = fleet
    root = work.parent / "secrets"
    root.mkdir(mode=0o700)
    (root / "secret.txt").write_text("root-only-secret\n")
    (root / "secret.json").write_text('{"secret": "root-only-secret"}')
    (root / "output.log").write_text("root-only-secret\n")
    (root / "result.json").write_text('{"secret": "root-only-secret"}')
    for f in root.iterdir():
        f.chmod(0o600)
    return client, work, root


def _ended(client, job, state="failed"):
    done = client.wait(job.id, timeout=60)
    assert done.state == state, done
    return done, output(client, job.id)


def test_a_job_that_turns_its_output_into_a_symlink_ships_only_its_own_output(secrets):
    client, _, root = secrets
    job = run(client, f"rm .corral/output.log; ln -s {root}/secret.txt .corral/output.log\n"
                      "echo mine; exit 3")  # fmt: skip
    done, seen = _ended(client, job)
    assert "root-only-secret" not in seen and "root-only-secret" not in (done.error or ""), seen
    assert "mine" in seen and "exited with code 3" in done.error


def test_a_job_that_swaps_its_corral_directory_ships_only_its_own_output(secrets):
    client, _, root = secrets
    job = run(client, f"mv .corral .gone; ln -s {root} .corral; echo mine; exit 4")
    done, seen = _ended(client, job)
    assert "root-only-secret" not in seen and "root-only-secret" not in (done.error or ""), seen
    assert "mine" in seen


def test_a_job_whose_result_is_a_symlink_gets_no_result(secrets):
    client, _, root = secrets
    job = run(client, f"ln -s {root}/secret.json .corral/result.json; exit 0")
    done, _ = _ended(client, job, "succeeded")
    assert done.result is None and "ignored" in (done.error or ""), done
    swapped = run(client, f"rm -r .corral; ln -s {root} .corral; exit 0")
    done, _ = _ended(client, swapped, "succeeded")
    assert done.result is None, done


def test_a_job_with_a_hard_linked_result_gets_no_result(secrets):
    # The kernel refuses a job a hard link to a file it cannot read and write where
    # fs.protected_hardlinks is 1; where it is 0 it does not, and the worker must refuse
    # the link itself. The link is made here, as root, as if the job had been let.
    client, work, root = secrets
    job = run(client, "while [ ! -e .corral/go ]; do sleep 0.1; done; exit 0")
    deadline = time.monotonic() + 30
    while not list((work / "attempts").glob("*/.corral")):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    corral = next((work / "attempts").glob("*/.corral"))
    os.link(root / "secret.json", corral / "result.json")
    (corral / "go").touch()
    done, _ = _ended(client, job, "succeeded")
    assert done.result is None and "ignored" in (done.error or ""), done


def test_an_adopted_job_that_swaps_its_files_ships_only_its_own(site):
    # A worker started again re-opens a running attempt's files: it must not follow them
    # either.
    coord, client, data = site
    token = client.create_worker("iso", persistent=True).token
    root = data / "secrets"
    root.mkdir(mode=0o700)
    (root / "secret.txt").write_text("root-only-secret\n")
    (root / "secret.json").write_text('{"secret": "root-only-secret"}')
    uids = f"{FIRST + 10}-{FIRST + 12}"
    worker = start_worker(coord.url, token, data / "w", uids)
    try:
        job = run(client, "echo before; while [ ! -e go ]; do sleep 0.1; done\n"
                          f"rm .corral/output.log; ln -s {root}/secret.txt .corral/output.log\n"
                          f"ln -s {root}/secret.json .corral/result.json; exit 0")  # fmt: skip
        deadline = time.monotonic() + 30
        while "before" not in output(client, job.id):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        worker.kill()  # SIGKILL: the job runs on, for the next worker to adopt
        worker.wait(10)
        next((data / "w" / "attempts").glob("*/.corral")).parent.joinpath("go").touch()
        worker = start_worker(coord.url, token, data / "w", uids)
        done = client.wait(job.id, timeout=90)
        seen = output(client, job.id)
        assert "root-only-secret" not in seen and "root-only-secret" not in (done.error or "")
        assert done.result is None, done
    finally:
        stop_worker(worker)
