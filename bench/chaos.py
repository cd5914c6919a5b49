"""Chaos benchmark: M jobs on K workers while workers die, links are cut, coordinators
restart and freeze, the database link goes silent, workers' disks fill up and floods of
jobs arrive. Real processes only, started and killed through ``tests/harness_e2e.py``; the
API and each job's history are read through ``corral.client``.

    .venv/bin/python bench/chaos.py --jobs 500 --workers 4 --seed 1
    .venv/bin/python bench/chaos.py --db postgresql://postgres@127.0.0.1:5432/postgres \
        --coordinators 2 --faults kill=3,cut=2,restart=1,freeze=2,db-cut=2,disk-full=1,flood=1

Faults come on a seeded schedule until ``--max-seconds`` less ``--drain-seconds`` (or until
every job has ended), each kind by its weight in ``--faults``: ``kill`` (SIGKILL a worker,
start it again under the same token), ``cut`` (a proxied worker's link), ``restart``
(SIGKILL a coordinator, start it again on the same store and port), ``freeze`` (SIGSTOP a
coordinator past the heartbeat timeout, then SIGCONT), ``db-cut`` (black-hole the link to
PostgreSQL; PostgreSQL only), ``disk-full`` (fill a worker's data directory, a tmpfs of its
own; needs root), ``flood`` (a burst of ``--flood-jobs`` short jobs). ``--enrolled`` of the
workers (half) enrol with a certificate and sign every request. Then everything heals,
drains and is read back. Prints, overall and per fault: jobs lost, results accepted twice,
healthy attempts killed (lost although their worker was neither killed nor cut off), and
the time from a fault's end until a job ends again; and why each lost attempt was lost,
from its history. Writes bench/results/chaos-<time>.json; exits 1 if a job was lost, made
twice by a retried submit or accepted twice, if a lost attempt has no cause in its
history, or if a coordinator-side fault killed a healthy attempt.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # one way to start and kill processes: the e2e harness
from _chaos_report import analyse, show  # noqa: E402
from _faults import KINDS, Coordinator, Run, Worker, mount_disks, unmount_disks  # noqa: E402
from faultproxy import FaultProxy  # noqa: E402
from harness_e2e import SERVER_ENV, Fleet, free_port, pid_alive  # noqa: E402

from corral.client import Client, ServerError, Unreachable, call_job  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TERMINAL = {"succeeded", "failed", "cancelled"}
console = Console()

# The job, as a process or as a call: see _chaos_call.py.
JOB = ROOT / "bench" / "_chaos_call.py"


# Long enough to ride out a coordinator's restart: its calls retry (they are idempotent).
PATIENT = {"attempts": 1000, "retry_timeout": 90.0}


def all_jobs(client: Client) -> list[dict[str, Any]]:
    """Every stored job, as the JSON document the API sends: what the analysis reads."""
    return [j.model_dump(mode="json") for j in client.jobs()]


@contextlib.contextmanager
def database(db: str | None, root: Path) -> Iterator[str]:
    """SQLite in the run's directory, or a fresh PostgreSQL database dropped afterwards."""
    if not db:
        yield f"sqlite:///{root / 'corral.db'}"
        return
    import psycopg

    name = f"corral_chaos_{secrets.token_hex(4)}"
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{db.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(db, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def kill_leftover_jobs(runs_dir: Path) -> int:
    """Job processes lead their own groups, so killing the workers' groups misses any
    orphan still running; the pid files name them (checked against the command line)."""
    killed = 0
    for f in runs_dir.glob("*.pid"):
        token, pid = f.name.split(".")[0], int(f.name.split(".")[2])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if token.encode() in cmdline and pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
                killed += 1
    return killed


def submit_one(run: Run, client: Client, token: str, secs: float, call: bool = False) -> None:
    """Submit with the job's token as its Idempotency-Key: a submit whose answer was lost (a
    restart, a freeze) is sent again and must not make a second job. ``call``: as a call
    job (``_chaos_call.run``, in a warm interpreter, which a busy worker may hold waiting for
    a slot) rather than a process of its own."""
    command = [sys.executable, str(JOB), token, f"{secs:.3f}", str(run.runs_dir)]
    while True:
        try:
            if call:
                spec = call_job("_chaos_call:run", (token, round(secs, 3), str(run.runs_dir)),
                                name=token, retries=10, idempotency_key=token,
                                env={"PYTHONPATH": str(ROOT / "bench")})  # fmt: skip
                (job,) = client.submit_many([spec])
            else:
                job = client.submit(command, name=token, retries=10, idempotency_key=token)
            run.job_ids[token] = job.id
            return
        except (Unreachable, ServerError):
            pass
        run.submit_retries += 1
        time.sleep(0.2)


def submitter(run: Run, specs: list[tuple[str, float, bool]], spread_s: float) -> None:
    """Submit every job, paced over ``spread_s``. One try per call, so that every resend is
    counted here."""
    with run.fleet.client(attempts=1, retry_timeout=5.0) as client:
        for i, (token, secs, call) in enumerate(specs):
            due = run.t0 + spread_s * i / max(1, len(specs))
            time.sleep(max(0.0, due - time.monotonic()))
            submit_one(run, client, token, secs, call)


def parse_faults(text: str) -> dict[str, float]:
    """``kill=3,cut=2,freeze`` -> weights (a name alone weighs 1)."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, weight = part.partition("=")
        if name not in KINDS:
            raise typer.BadParameter(
                f"unknown fault {name!r} (one of {', '.join(KINDS)})", param_hint="--faults"
            )
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError:
            raise typer.BadParameter(
                f"{part!r}: the weight is not a number", param_hint="--faults"
            ) from None
    return weights


def chaos(opts: dict[str, Any], root: Path, db_url: str) -> dict[str, Any]:
    weights = dict(opts["faults"])
    db_proxy = None
    if db_url.startswith("postgresql") and weights.get("db-cut"):
        u = make_url(db_url)
        db_proxy = FaultProxy(u.host or "127.0.0.1", u.port or 5432).start()
        db_url = u.set(port=db_proxy.port).render_as_string(hide_password=False)
    elif weights.pop("db-cut", None):
        console.print("no db-cut faults: SQLite has no link to cut")
    fleet = Fleet(root, db_url)
    server_env = {
        **SERVER_ENV,
        "CORRAL_SERVER__REAPER_INTERVAL_S": str(opts["reaper_interval"]),
        "CORRAL_SERVER__STREAM_GRACE_S": str(opts["stream_grace"]),
        "CORRAL_SERVER__HEARTBEAT_TIMEOUT_S": str(opts["heartbeat_timeout"]),
        "CORRAL_SERVER__HEARTBEAT_INTERVAL_S": str(opts["heartbeat"]),
        "CORRAL_SERVER__RETRY_BACKOFF_BASE_S": str(opts["backoff_base"]),
        "CORRAL_SERVER__RETRY_BACKOFF_CAP_S": str(opts["backoff_cap"]),
        # A silent database link fails a request in seconds, not after the default 30 s.
        "CORRAL_SERVER__DB_STATEMENT_TIMEOUT_S": "3",
        "CORRAL_SERVER__DB_POOL_TIMEOUT_S": "3",
        "CORRAL_SERVER__DB_CONNECT_TIMEOUT_S": "2",
    }
    rng = random.Random(opts["seed"])
    run = Run(
        fleet, server_env, opts["slots"], opts["heartbeat"], rng, root / "runs", db_proxy=db_proxy
    )
    run.runs_dir.mkdir()
    job_rng = random.Random(opts["seed"] + 1)
    specs = [
        (f"chaos{opts['seed']}x{i:05d}x{secrets.token_hex(4)}", job_rng.uniform(0.05, 0.5),
         job_rng.random() < opts["calls"])
        for i in range(opts["jobs"])
    ]  # fmt: skip
    run.specs.extend((token, secs) for token, secs, _ in specs)
    names = [f"w{i}" for i in range(opts["workers"])]
    disks = mount_disks(root, names) if weights.get("disk-full") else {}
    if weights.get("disk-full") and not disks:
        weights.pop("disk-full")
    proxies: list[FaultProxy] = []
    try:
        run.coordinators = [Coordinator(fleet.port)] + [
            Coordinator(free_port()) for _ in range(opts["coordinators"] - 1)
        ]
        for c in run.coordinators:
            run.start_coordinator(c)
        fleet.url = run.urls()  # the run's own calls fail over too
        for i, name in enumerate(names):
            created = fleet.create_worker(name)
            proxy = None
            if i < opts["proxied"]:
                proxy = FaultProxy("127.0.0.1", fleet.port).start()
                proxies.append(proxy)
            w = Worker(name, created["id"], created["token"], proxy, disk=disks.get(name),
                       enrolled=i >= opts["workers"] - opts["enrolled"])  # fmt: skip
            run.workers.append(w)
            run.start_worker(w)
        run.t0 = time.monotonic()
        sub = threading.Thread(
            target=submitter,
            name="submitter",
            daemon=True,
            args=(run, specs, opts["submit_seconds"]),
        )
        sub.start()
        flood_client = fleet.client(attempts=1, retry_timeout=5.0)

        flood_rng = random.Random(opts["seed"] + 2)

        def flood_submit(token: str, secs: float) -> None:
            submit_one(run, flood_client, token, secs, flood_rng.random() < opts["calls"])

        inject = {
            "kill": run.kill,
            "cut": run.cut,
            "restart": run.restart,
            "freeze": run.freeze,
            "db-cut": run.db_cut,
            "disk-full": run.disk_full,
            "flood": lambda: run.flood(opts["flood_jobs"], flood_submit),
        }
        kinds = [k for k in KINDS if weights.get(k)]
        chaos_until = run.t0 + opts["max_seconds"] - opts["drain_seconds"]
        deadline = run.t0 + opts["max_seconds"]
        next_fault = time.monotonic() + rng.uniform(opts["fault_min"], opts["fault_max"])
        next_report, all_ended = 0.0, False
        with fleet.client(**PATIENT) as client:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if now >= chaos_until:
                    run.heal_everything()  # after the chaos: heal at once
                if now >= next_report:
                    run.check_workers()
                    counts = Counter(j["state"] for j in all_jobs(client))
                    ended = sum(counts[s] for s in TERMINAL)
                    console.log(
                        f"t={run.now():6.1f}s submitted {len(run.job_ids)}/"
                        f"{len(run.specs)} faults {len(run.faults)} "
                        f"{dict(sorted(counts.items()))}"
                    )
                    if len(run.job_ids) == len(run.specs) and ended >= len(run.specs):
                        all_ended = True
                        break
                    next_report = time.monotonic() + 2.0
                if kinds and chaos_until > now >= next_fault:
                    inject[rng.choices(kinds, [weights[k] for k in kinds])[0]]()
                    next_fault = time.monotonic() + rng.uniform(
                        opts["fault_min"], opts["fault_max"]
                    )
                time.sleep(0.05)
            ended_s = run.now()
            run.heal_everything()
            sub.join(5)
            time.sleep(opts["settle_seconds"])  # a late stale report must still be refused
            reach = 2 * opts["heartbeat_timeout"] + 10
            report = analyse(run, client, reach)
        flood_client.close()
        report["last_fault_s"] = run.faults[-1]["t"] if run.faults else None
        report["all_ended_s"] = ended_s if all_ended else None
        report["server_env"] = {
            k: v for k, v in server_env.items() if k != "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY"
        }
        report["weights"] = {k: weights[k] for k in kinds}
        report["call_jobs"] = sum(1 for *_, call in specs if call)  # of the first submits
        return report
    finally:
        run.heal_everything()
        for p in fleet.procs:  # workers leave cleanly if they can, stopping their jobs
            if p not in [c.proc for c in run.coordinators] and p.alive():
                p.popen.send_signal(signal.SIGTERM)
        for p in fleet.procs:
            with contextlib.suppress(Exception):
                p.wait(5)
        fleet.close()
        for proxy in [*proxies, *([db_proxy] if db_proxy else [])]:
            proxy.stop()
        kill_leftover_jobs(run.runs_dir)
        unmount_disks(disks)


# --- the command ------------------------------------------------------------------------------

# Faults whose side is the coordinator's: none of them may kill a healthy attempt.
COORDINATOR_SIDE = ("restart", "freeze", "db-cut", "flood")


def main(
    jobs: Annotated[int, typer.Option(min=1, help="Jobs to run.")] = 500,
    workers: Annotated[int, typer.Option(min=1, help="Persistent workers.")] = 4,
    slots: Annotated[int, typer.Option(min=1, help="--max-concurrent-tasks per worker.")] = 2,
    proxied: Annotated[
        int | None, typer.Option(help="Workers behind a cuttable proxy [half].")
    ] = None,
    enrolled: Annotated[
        int | None,
        typer.Option(help="Workers that enrol with a certificate and sign each request [half]."),
    ] = None,
    coordinators: Annotated[
        int, typer.Option(min=1, max=4, help="Coordinators on one store (PostgreSQL for 2+).")
    ] = 1,
    faults: Annotated[str, typer.Option(help="Faults and their weights, name=weight,….")] = (
        "kill=3,cut=2,restart=1,freeze=1,db-cut=1,disk-full=1,flood=1"
    ),
    flood_jobs: Annotated[int, typer.Option(min=1, help="Jobs in one flood.")] = 100,
    calls: Annotated[
        float, typer.Option(min=0, max=1, help="Share of the jobs that are call jobs.")
    ] = 0.3,
    seed: Annotated[int, typer.Option(help="Seeds the fault schedule and job lengths.")] = 1,
    max_seconds: Annotated[float, typer.Option(help="Bound on the whole run.")] = 300,
    drain_seconds: Annotated[float, typer.Option(help="No faults in this last part.")] = 90,
    submit_seconds: Annotated[float, typer.Option(help="Submits spread over this.")] = 20,
    settle_seconds: Annotated[float, typer.Option(help="Wait after all ended.")] = 3,
    fault_min: Annotated[float, typer.Option(help="Least seconds between faults.")] = 0.5,
    fault_max: Annotated[float, typer.Option(help="Most seconds between faults.")] = 3.0,
    heartbeat: Annotated[float, typer.Option(help="Worker heartbeat seconds.")] = 1.0,
    heartbeat_timeout: Annotated[float, typer.Option(help="Coordinator's timeout.")] = 6.0,
    stream_grace: Annotated[float, typer.Option(help="Dropped stream → offline.")] = 1.0,
    reaper_interval: Annotated[float, typer.Option(help="Reaper tick seconds.")] = 0.3,
    backoff_base: Annotated[float, typer.Option(help="Retry backoff base.")] = 0.1,
    backoff_cap: Annotated[float, typer.Option(help="Retry backoff cap.")] = 2.0,
    db: Annotated[
        str | None, typer.Option(help="PostgreSQL server URL: a fresh database on it [SQLite].")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the run's directory (logs).")] = False,
    out: Annotated[Path | None, typer.Option(help="JSON file to write.")] = None,
) -> None:
    """Run jobs through every kind of fault; count what was lost, doubled or killed."""
    opts = {k: v for k, v in locals().items() if k not in ("out", "keep")}
    opts["faults"] = parse_faults(faults)
    opts["proxied"] = (workers + 1) // 2 if proxied is None else min(proxied, workers)
    opts["enrolled"] = workers // 2 if enrolled is None else min(enrolled, workers)
    opts["store"] = "postgresql" if db else "sqlite"
    if coordinators > 1 and not db:
        raise typer.BadParameter(
            "several coordinators share one PostgreSQL: give --db", param_hint="--coordinators"
        )
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # even where the shell started us ignoring it
    root = Path(tempfile.mkdtemp(prefix="corral-chaos-"))
    console.print(f"run directory (coordinator and worker logs): {root}")
    started = time.monotonic()
    try:
        with database(db, root) as db_url:
            result = chaos(opts, root, db_url)
    except KeyboardInterrupt:
        console.print(f"interrupted; every process stopped, logs kept in {root}")
        raise typer.Exit(130) from None
    result = {
        "params": {k: v for k, v in opts.items() if k != "db"},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.monotonic() - started, 1),
        **result,
    }
    show(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")
    healthy_killed = sum(
        result["per_fault"].get(k, {}).get("healthy_attempts_killed", 0) for k in COORDINATOR_SIDE
    )
    bad = (
        result["lost"]
        or result["accepted_twice"]
        or result["accepted_without_evidence"]
        or result["lost_attempts_without_a_cause"]
        or healthy_killed
        or result["jobs_in_store"] > result["submitted"]  # a retried submit made a second job
    )
    if keep or bad or result["worker_crashes"]:
        console.print(f"logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if bad:
        console.print(
            "[red]FAILED[/red]: jobs lost, made twice or accepted twice, a loss "
            "without a cause, or a healthy attempt killed by the coordinator's side"
        )
        raise typer.Exit(1)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: every process group killed


if __name__ == "__main__":
    typer.run(main)
