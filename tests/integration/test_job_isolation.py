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


# ---- a uid is one attempt's at a time ------------------------------------------------------


def _as(uid, *argv):
    return subprocess.Popen(list(argv), user=uid, group=uid, extra_groups=[], cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)  # fmt: skip


def _alive(uid):
    return [p for p in psutil.process_iter(["uids", "status"])
            if p.info["uids"] is not None and p.info["uids"].real == uid
            and p.info["status"] != psutil.STATUS_ZOMBIE]  # fmt: skip


FREEZER = Path("/sys/fs/cgroup/freezer")


@pytest.fixture
def unkillable():
    """A process of a uid that SIGKILL does not end for now: frozen (cgroup v1 freezer), in
    uninterruptible sleep until thawed, as a process stuck in a driver or a dead NFS mount is.
    Yields (start, thaw)."""
    group = FREEZER / f"corral-test-{os.getpid()}"
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"needs the cgroup v1 freezer: {exc}")
    made = []

    def start(uid):
        proc = _as(uid, "sleep", "300")
        made.append(proc)
        (group / "cgroup.procs").write_text(str(proc.pid))
        (group / "freezer.state").write_text("FROZEN")
        deadline = time.monotonic() + 10
        while (group / "freezer.state").read_text().strip() != "FROZEN":
            assert time.monotonic() < deadline, "the freezer did not freeze"
            time.sleep(0.05)
        os.kill(proc.pid, 9)
        time.sleep(0.5)
        assert proc.poll() is None, "not frozen: SIGKILL ended it"
        return proc

    def thaw():
        if group.exists():
            (group / "freezer.state").write_text("THAWED")

    try:
        yield start, thaw
    finally:
        thaw()
        for proc in made:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        if group.exists():
            group.rmdir()


def test_a_uid_is_not_handed_on_while_a_process_of_it_lives(site, unkillable):
    # A process of the range's attempt uid, there before the worker, that SIGKILL cannot end:
    # the uid must wait, swept again and again, and go to a job only once nothing is left.
    coord, client, data = site
    start, thaw = unkillable
    call, uid = FIRST + 20, FIRST + 21
    stuck = start(uid)
    token = client.create_worker("iso", persistent=True).token
    worker = start_worker(coord.url, token, data / "w", f"{call}-{uid}", slots=1)
    try:
        job = run(client, "id -u; pgrep -u $(id -u) -x sleep && echo SHARED; exit 0")
        time.sleep(12)  # past the worker's first sweep of it, and a second
        assert client.job(job.id).state not in ("running", "succeeded"), client.job(job.id)
        assert stuck.poll() is None
        thaw()
        stuck.wait(10)  # the SIGKILL it was sent, now taken
        done = client.wait(job.id, timeout=90)
        assert done.state == "succeeded", done
        seen = output(client, job.id)
        assert int(seen.split()[0]) == uid and "SHARED" not in seen, seen
    finally:
        stop_worker(worker)


def test_a_process_left_of_a_uid_before_the_worker_started_is_killed_before_it_is_used(site):
    coord, client, data = site
    call, uid = FIRST + 30, FIRST + 31
    stray = _as(uid, "sleep", "300")
    token = client.create_worker("iso", persistent=True).token
    worker = start_worker(coord.url, token, data / "w", f"{call}-{uid}", slots=1)
    try:
        stray.wait(30)  # the worker's sweep at its start
        job = run(client, "id -u; pgrep -u $(id -u) -x sleep && echo SHARED; exit 0")
        assert client.wait(job.id, timeout=60).state == "succeeded"
        seen = output(client, job.id)
        assert int(seen.split()[0]) == uid and "SHARED" not in seen, seen
    finally:
        stop_worker(worker)
        if stray.poll() is None:
            stray.kill()
            stray.wait(10)


def test_two_workers_on_one_host_never_share_a_uid(site):
    coord, client, data = site
    uids = f"{FIRST + 40}-{FIRST + 44}"  # both are given the same range
    tokens = [client.create_worker(f"iso{i}", persistent=True).token for i in range(3)]
    a = start_worker(coord.url, tokens[0], data / "a", uids, slots=2)
    b = c = None
    try:
        _until_registered(client, 1)
        b = start_worker(coord.url, tokens[1], data / "b", uids, slots=1)
        _until_registered(client, 2)  # b holds its uids from before it registers
        # A third finds too few uids of the range left: a usage error at its start.
        c = start_worker(coord.url, tokens[2], data / "c", uids, slots=1)
        try:
            _, err = c.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            c.kill()
            _, err = c.communicate()
            raise AssertionError(err) from None
        assert c.returncode == 2 and "held by another worker" in err, err
        jobs = [run(client, "id -u; sleep 4") for _ in range(3)]
        deadline = time.monotonic() + 60
        while sum(client.job(j.id).state == "running" for j in jobs) < 3:
            assert time.monotonic() < deadline, [client.job(j.id).state for j in jobs]
            time.sleep(0.1)
        for j in jobs:
            assert client.wait(j.id, timeout=60).state == "succeeded"
        seen = [int(output(client, j.id).split()[0]) for j in jobs]
        assert len(set(seen)) == 3, seen
    finally:
        for w in (a, b, c):
            if w is not None:
                stop_worker(w)


def _until_registered(client, count):
    deadline = time.monotonic() + 30
    while sum(w.status in ("idle", "busy") for w in client.workers()) < count:
        assert time.monotonic() < deadline, client.workers()
        time.sleep(0.2)


def test_a_user_of_its_own_in_a_sandbox_sees_only_its_own_directory(site):
    from corral.worker.sandbox import available

    if (why := available()) is not None:
        pytest.skip(f"no sandbox here: {why}")
    coord, client, data = site
    token = client.create_worker("boxed", persistent=True).token
    worker = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url", coord.url,
         "--persistent", "--run-as-users", f"{FIRST + 50}-{FIRST + 54}", "--sandbox", "on",
         "--data-dir", str(data / "w")],
        env={**os.environ, "CORRAL_WORKER__TOKEN": token},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        job = run(client, f"id -u; ls -A {data / 'w'}; echo x > mine.txt && cat mine.txt")
        assert client.wait(job.id, timeout=60).state == "succeeded", output(client, job.id)
        uid, *rest = output(client, job.id).split()
        assert FIRST + 50 < int(uid) <= FIRST + 54 and rest == ["attempts", "x"], rest
    finally:
        stop_worker(worker)
