"""Chaos benchmark: M jobs on K workers while workers die, the coordinator restarts and
links are cut. Real processes only, started and killed through ``tests/harness_e2e.py``; the
API is read through ``corral.client``.

    .venv/bin/python bench/chaos.py --jobs 500 --workers 4 --seed 1
    .venv/bin/python bench/chaos.py --db postgresql://postgres@127.0.0.1:5432/postgres

Faults come on a seeded schedule until ``--max-seconds`` less ``--drain-seconds`` (or until
every job has ended): SIGKILL a worker and start it again under the same token; SIGKILL the
coordinator and start it again on the same data and port; cut a proxied worker's link for a
few seconds. Then everything drains and is read back from the API. Prints jobs submitted,
faults injected, jobs lost, results accepted twice, attempts per job and the time from a
worker's death to its job running again; writes bench/results/chaos-<time>.json; exits 1 if
a job was lost, made twice by a retried submit, or accepted twice.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # one way to start and kill processes: the e2e harness
from faultproxy import FaultProxy  # noqa: E402
from harness_e2e import SERVER_ENV, Fleet, Proc, pid_alive  # noqa: E402

from corral.client import Client, ServerError, Unreachable  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TERMINAL = {"succeeded", "failed", "cancelled"}
console = Console()

# The job: record its pid (for clean-up), sleep, print its token, then note that this
# attempt ran to the end. The note is the evidence behind an accepted result.
JOB_SCRIPT = """\
import os, sys, time
tok, secs, runs = sys.argv[1], float(sys.argv[2]), sys.argv[3]
att = os.environ.get('CORRAL_ATTEMPT', '?')
open(os.path.join(runs, f'{tok}.{att}.{os.getpid()}.pid'), 'w').close()
time.sleep(secs)
print(tok, 'attempt', att, flush=True)
with open(os.path.join(runs, tok + '.done'), 'a') as fh:
    fh.write(att + '\\n')
"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``q`` in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def ts(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class Worker:
    name: str
    worker_id: str
    token: str
    proxy: FaultProxy | None
    proc: Proc | None = None
    cut: bool = False
    killed: bool = False


@dataclass
class Run:
    """The state of one chaos run; the fault loop and the submitter thread share it."""

    fleet: Fleet
    server_env: dict[str, str]
    slots: int
    heartbeat: float
    rng: random.Random
    t0: float = field(default_factory=time.monotonic)
    workers: list[Worker] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    kills: list[tuple[str, datetime]] = field(default_factory=list)  # (worker_id, when)
    pending: list[tuple[float, int, str, Callable[[], None]]] = field(default_factory=list)
    job_ids: dict[str, str] = field(default_factory=dict)  # token -> job id
    submit_retries: int = 0
    crashes: list[dict[str, Any]] = field(default_factory=list)
    _order: Iterator[int] = field(default_factory=itertools.count)

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def later(self, delay: float, what: str, fn: Callable[[], None]) -> None:
        heapq.heappush(self.pending, (time.monotonic() + delay, next(self._order), what, fn))

    def run_due(self, everything: bool = False) -> None:
        while self.pending and (everything or self.pending[0][0] <= time.monotonic()):
            heapq.heappop(self.pending)[3]()

    def start_worker(self, w: Worker) -> None:
        url = w.proxy.url if w.proxy else None
        w.proc = self.fleet.start_worker(
            w.name, token=w.token, url=url, slots=self.slots, heartbeat=self.heartbeat
        )
        w.killed = False

    def check_workers(self) -> None:
        """A worker that exited without being killed is a finding: note it, start it again."""
        for w in self.workers:
            if w.proc and not w.killed and not w.proc.alive():
                self.crashes.append(
                    {"t": self.now(), "worker": w.name, "exit_code": w.proc.popen.returncode}
                )
                self.start_worker(w)

    # --- faults -------------------------------------------------------------------------

    def kill_worker(self) -> bool:
        live = [w for w in self.workers if w.proc and w.proc.alive()]
        if not live:
            return False
        w = self.rng.choice(live)
        assert w.proc is not None
        when = datetime.now(UTC)
        w.proc.kill9()
        w.killed = True
        self.kills.append((w.worker_id, when))
        back = round(self.rng.uniform(0.5, 3.0), 2)
        self.faults.append(
            {"t": self.now(), "fault": "kill_worker", "target": w.name, "restart_after_s": back}
        )
        self.later(back, f"restart {w.name}", lambda: self.start_worker(w))
        return True

    def restart_coordinator(self) -> bool:
        server = self.fleet.server
        assert server is not None
        down = round(self.rng.uniform(0.3, 2.0), 2)
        server.kill9()
        time.sleep(down)
        t = time.monotonic()
        self.fleet.start_server(**self.server_env)
        self.faults.append(
            {
                "t": self.now(),
                "fault": "restart_coordinator",
                "down_s": down,
                "start_s": round(time.monotonic() - t, 2),
            }
        )
        return True

    def cut_link(self) -> bool:
        free = [w for w in self.workers if w.proxy and not w.cut and w.proc and w.proc.alive()]
        if not free:
            return False
        w = self.rng.choice(free)
        assert w.proxy is not None
        length = round(self.rng.uniform(0.5, 6.0), 2)
        w.proxy.cut()
        w.cut = True
        self.faults.append(
            {"t": self.now(), "fault": "cut_link", "target": w.name, "cut_s": length}
        )
        self.later(length, f"restore {w.name}", lambda: self.restore(w))
        return True

    def restore(self, w: Worker) -> None:
        if w.proxy and w.cut:
            w.proxy.restore()
            w.cut = False


# --- the API, through corral.client, patient with a coordinator that is restarting -------------

# Long enough to ride out a coordinator's restart: its calls retry (they are idempotent).
PATIENT = {"attempts": 1000, "retry_timeout": 90.0}


def all_jobs(client: Client) -> list[dict[str, Any]]:
    """Every stored job, as the JSON document the API sends: what the analysis reads."""
    return [j.model_dump(mode="json") for j in client.jobs()]


def logged_attempts(client: Client, job_id: str, token: str) -> set[int]:
    """The attempts whose own process printed the job's token line (``TOKEN attempt N``,
    N from the worker's CORRAL_ATTEMPT) into the output the coordinator kept."""
    out = set()
    for line in client.logs(job_id):
        words = line.split()
        if len(words) == 3 and words[:2] == [token, "attempt"] and words[2].isdigit():
            out.add(int(words[2]))
    return out


def submitter(run: Run, specs: list[tuple[str, float]], runs_dir: Path, spread_s: float) -> None:
    """Submit every job, paced over ``spread_s``, each with an Idempotency-Key: a submit
    whose answer was lost in a restart is sent again and must not make a second job."""
    # One try per call, so that every resend is counted here.
    with run.fleet.client(attempts=1, retry_timeout=5.0) as client:
        for i, (token, secs) in enumerate(specs):
            due = run.t0 + spread_s * i / max(1, len(specs))
            time.sleep(max(0.0, due - time.monotonic()))
            command = [sys.executable, "-c", JOB_SCRIPT, token, f"{secs:.3f}", str(runs_dir)]
            while True:
                try:
                    job = client.submit(command, name=token, retries=10, idempotency_key=token)
                    run.job_ids[token] = job.id
                    break
                except (Unreachable, ServerError):
                    pass
                run.submit_retries += 1
                time.sleep(0.2)


# --- the run ---------------------------------------------------------------------------------


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


def chaos(opts: dict[str, Any], root: Path, db_url: str) -> dict[str, Any]:
    fleet = Fleet(root, db_url)
    server_env = {
        **SERVER_ENV,
        "CORRAL_SERVER__REAPER_INTERVAL_S": str(opts["reaper_interval"]),
        "CORRAL_SERVER__STREAM_GRACE_S": str(opts["stream_grace"]),
        "CORRAL_SERVER__HEARTBEAT_TIMEOUT_S": str(opts["heartbeat_timeout"]),
        "CORRAL_SERVER__HEARTBEAT_INTERVAL_S": str(opts["heartbeat"]),
        "CORRAL_SERVER__RETRY_BACKOFF_BASE_S": str(opts["backoff_base"]),
        "CORRAL_SERVER__RETRY_BACKOFF_CAP_S": str(opts["backoff_cap"]),
    }
    rng = random.Random(opts["seed"])
    run = Run(fleet, server_env, opts["slots"], opts["heartbeat"], rng)
    runs_dir = root / "runs"
    runs_dir.mkdir()
    job_rng = random.Random(opts["seed"] + 1)
    specs = [
        (f"chaos{opts['seed']}x{i:05d}x{secrets.token_hex(4)}", job_rng.uniform(0.05, 0.5))
        for i in range(opts["jobs"])
    ]
    proxies: list[FaultProxy] = []
    try:
        fleet.start_server(**server_env)
        for i in range(opts["workers"]):
            name = f"w{i}"
            created = fleet.create_worker(name)
            proxy = None
            if i < opts["proxied"]:
                proxy = FaultProxy("127.0.0.1", fleet.port).start()
                proxies.append(proxy)
            w = Worker(name, created["id"], created["token"], proxy)
            run.workers.append(w)
            run.start_worker(w)
        run.t0 = time.monotonic()
        sub = threading.Thread(
            target=submitter,
            name="submitter",
            daemon=True,
            args=(run, specs, runs_dir, opts["submit_seconds"]),
        )
        sub.start()
        chaos_until = run.t0 + opts["max_seconds"] - opts["drain_seconds"]
        deadline = run.t0 + opts["max_seconds"]
        faults = {
            "kill_worker": run.kill_worker,
            "cut_link": run.cut_link,
            "restart_coordinator": run.restart_coordinator,
        }
        weights = [opts["kill_weight"], opts["cut_weight"], opts["coordinator_weight"]]
        next_fault = time.monotonic() + rng.uniform(opts["fault_min"], opts["fault_max"])
        next_report, all_ended = 0.0, False
        with fleet.client(**PATIENT) as client:
            while time.monotonic() < deadline:
                now = time.monotonic()
                run.run_due(everything=now >= chaos_until)  # after the chaos: heal at once
                if now >= next_report:
                    run.check_workers()
                    counts = Counter(j["state"] for j in all_jobs(client))
                    ended = sum(counts[s] for s in TERMINAL)
                    console.log(
                        f"t={run.now():6.1f}s submitted {len(run.job_ids)} "
                        f"faults {len(run.faults)} {dict(sorted(counts.items()))}"
                    )
                    if len(run.job_ids) == len(specs) and ended >= len(specs):
                        all_ended = True
                        break
                    next_report = time.monotonic() + 2.0
                if now < chaos_until and now >= next_fault:
                    kind = rng.choices(list(faults), weights)[0]
                    faults[kind]()
                    next_fault = time.monotonic() + rng.uniform(
                        opts["fault_min"], opts["fault_max"]
                    )
                time.sleep(0.05)
            ended_s = run.now()
            run.run_due(everything=True)
            sub.join(5)
            time.sleep(opts["settle_seconds"])  # a late stale report must still be refused
            report = analyse(run, client, specs, runs_dir)
        report["last_fault_s"] = run.faults[-1]["t"] if run.faults else None
        report["all_ended_s"] = ended_s if all_ended else None
        report["server_env"] = {
            k: v for k, v in server_env.items() if k != "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY"
        }
        return report
    finally:
        for p in fleet.procs:  # workers leave cleanly if they can, stopping their jobs
            if p is not fleet.server and p.alive():
                p.popen.send_signal(signal.SIGTERM)
        for p in fleet.procs:
            with contextlib.suppress(Exception):
                p.wait(5)
        fleet.close()
        for proxy in proxies:
            proxy.stop()
        kill_leftover_jobs(runs_dir)


# --- reading it back -------------------------------------------------------------------------


def analyse(
    run: Run, client: Client, specs: list[tuple[str, float]], runs_dir: Path
) -> dict[str, Any]:
    stored = all_jobs(client)
    jobs = {tok: client.job(jid).model_dump(mode="json") for tok, jid in run.job_ids.items()}
    names = {w.worker_id: w.name for w in run.workers}
    lost, twice, unproven, reran = [], [], [], 0
    per_job: Counter[int] = Counter()
    outcomes: Counter[str] = Counter()
    for token, _ in specs:
        job = jobs.get(token)
        if job is None:
            lost.append({"token": token, "state": "never submitted"})
            continue
        attempts = job["attempts"] or []
        per_job[len(attempts)] += 1
        outcomes.update(str(a["outcome"]) for a in attempts)
        wins = [a["number"] for a in attempts if a["outcome"] == "succeeded"]
        if job["state"] != "succeeded":
            lost.append(
                {
                    "id": job["id"],
                    "state": job["state"],
                    "error": job["error"],
                    "attempts": [
                        (a["number"], names.get(a["worker_id"]), a["outcome"]) for a in attempts
                    ],
                }
            )
        if len(wins) > 1:
            twice.append({"id": job["id"], "succeeded_attempts": wins})
        done_file = runs_dir / f"{token}.done"
        ran_to_end = done_file.read_text().split() if done_file.exists() else []
        reran += len(ran_to_end) > 1
        if job["state"] == "succeeded":
            logged = logged_attempts(client, job["id"], token)
            accepted = str(job["attempt"])
            if (
                wins != [job["attempt"]]
                or accepted not in ran_to_end
                or job["attempt"] not in logged
            ):
                unproven.append(
                    {
                        "id": job["id"],
                        "attempt": job["attempt"],
                        "wins": wins,
                        "ran_to_end": ran_to_end,
                        "logged": sorted(logged),
                    }
                )
    counts = [n for n, c in per_job.items() for _ in range(c)]
    return {
        "submitted": len(run.job_ids),
        "jobs_in_store": len(stored),
        "submit_retries": run.submit_retries,
        "worker_crashes": run.crashes,
        "faults": dict(Counter(f["fault"] for f in run.faults)),
        "fault_log": run.faults,
        "lost": lost,
        "accepted_twice": twice,
        "accepted_without_evidence": unproven,
        "ran_to_end_more_than_once": reran,
        "attempts_per_job": {
            "mean": round(statistics.fmean(counts), 3) if counts else None,
            "max": max(counts, default=0),
            "histogram": dict(sorted(per_job.items())),
        },
        "attempt_outcomes": dict(outcomes),
        "recovery": recovery(run, jobs, runs_dir),
        "jobs": [
            {
                "id": j["id"],
                "name": j["name"],
                "state": j["state"],
                "attempts": [
                    [
                        a["number"],
                        names.get(a["worker_id"]),
                        a["outcome"],
                        a["assigned_at"],
                        a["started_at"],
                        a["finished_at"],
                    ]
                    for a in j["attempts"] or []
                ],
            }
            for j in jobs.values()
        ],
    }


def recovery(run: Run, jobs: dict[str, dict[str, Any]], runs_dir: Path) -> dict[str, Any]:
    """For each SIGKILLed worker, the attempts it held at that moment, and how long until
    each job's next attempt started (on another worker, or on the same one restarted)."""
    names = {w.worker_id: w.name for w in run.workers}
    seen: set[tuple[str, int]] = set()
    held: list[dict[str, Any]] = []
    other, same, finished, never = [], [], 0, 0
    for worker_id, when in sorted(run.kills, key=lambda k: k[1]):
        for token, job in jobs.items():
            attempts = job["attempts"] or []
            for a in attempts:
                assigned, ended = ts(a["assigned_at"]), ts(a["finished_at"])
                if a["worker_id"] != worker_id or assigned is None or assigned > when:
                    continue
                if (ended is not None and ended <= when) or (job["id"], a["number"]) in seen:
                    continue
                seen.add((job["id"], a["number"]))
                item: dict[str, Any] = {
                    "job": job["id"],
                    "attempt": a["number"],
                    "worker": names.get(worker_id),
                    "killed_at": when,
                    "outcome": a["outcome"],
                }
                held.append(item)
                if a["outcome"] == "succeeded":  # its report got there, or it was adopted
                    finished += 1
                    continue
                for b in attempts:
                    start, source = started(token, b, runs_dir)
                    if b["number"] > a["number"] and start is not None:
                        gap = (start - when).total_seconds()
                        (other if b["worker_id"] != worker_id else same).append(gap)
                        item["next"] = {
                            "attempt": b["number"],
                            "worker": names.get(b["worker_id"]),
                            "start_from": source,
                            "after_s": round(gap, 3),
                        }
                        break
                else:
                    never += 1
    both = other + same

    def stats(values: list[float]) -> dict[str, Any]:
        if not values:
            return {"count": 0}
        return {
            "count": len(values),
            "p50_s": round(statistics.median(values), 2),
            "p90_s": round(percentile(values, 90), 2),
            "max_s": round(max(values), 2),
        }

    return {
        "held_at_kill": len(seen),
        "start_from_pid_file": sum(1 for h in held if h.get("next", {}).get("start_from") == "pid"),
        "finished_anyway": finished,
        "never_ran_again": never,
        "to_next_attempt": stats(both),
        "on_another_worker": stats(other),
        "on_the_restarted_worker": stats(same),
        "held": held,
    }


def started(token: str, attempt: dict[str, Any], runs_dir: Path) -> tuple[datetime | None, str]:
    """When an attempt's process started: the coordinator's ``started_at``, else (its
    running report never arrived, only its final one) the job's own pid file."""
    if attempt["started_at"]:
        return ts(attempt["started_at"]), "api"
    pids = list(runs_dir.glob(f"{token}.{attempt['number']}.*.pid"))
    if not pids:
        return None, ""
    return datetime.fromtimestamp(min(p.stat().st_mtime for p in pids), UTC), "pid"


# --- the command ------------------------------------------------------------------------------


def show(result: dict[str, Any]) -> None:
    p, r = result["params"], result["recovery"]
    table = Table(title="chaos benchmark", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "jobs / workers x slots (proxied)",
        f"{p['jobs']} / {p['workers']} x {p['slots']} ({p['proxied']})",
    )
    table.add_row("store", p["store"])
    table.add_row(
        "seed / wall time",
        f"{p['seed']} / {result['wall_s']}s (last fault at {result['last_fault_s']}s, "
        f"all ended at {result['all_ended_s'] or 'never'}s)",
    )
    table.add_row(
        "jobs submitted (in the store)", f"{result['submitted']} ({result['jobs_in_store']})"
    )
    faults = result["faults"]
    table.add_row(
        "faults injected",
        f"{sum(faults.values())}: " + ", ".join(f"{n} {k}" for k, n in sorted(faults.items())),
    )
    table.add_row("jobs lost", str(len(result["lost"])))
    table.add_row("results accepted twice", str(len(result["accepted_twice"])))
    table.add_row("results without evidence", str(len(result["accepted_without_evidence"])))
    table.add_row("jobs that ran to the end twice+", str(result["ran_to_end_more_than_once"]))
    a = result["attempts_per_job"]
    table.add_row("attempts per job mean / max", f"{a['mean']} / {a['max']}")
    table.add_row("attempts histogram", "  ".join(f"{k}:{v}" for k, v in a["histogram"].items()))
    table.add_row(
        "attempt outcomes",
        ", ".join(f"{n} {k}" for k, n in sorted(result["attempt_outcomes"].items())),
    )
    table.add_row(
        "held by killed workers",
        f"{r['held_at_kill']} ({r['finished_anyway']} "
        f"finished anyway, {r['never_ran_again']} never ran again)",
    )
    for key, label in (
        ("to_next_attempt", "death → next attempt running"),
        ("on_another_worker", "  … on another worker"),
        ("on_the_restarted_worker", "  … on the restarted worker"),
    ):
        s = r[key]
        if s["count"]:
            table.add_row(f"{label} p50 / p90 (n)", f"{s['p50_s']}s / {s['p90_s']}s ({s['count']})")
    console.print(table)
    settings = ", ".join(
        f"{k.removeprefix('CORRAL_SERVER__')}={v}" for k, v in result["server_env"].items()
    )
    console.print(f"coordinator: {settings}; worker heartbeat {p['heartbeat']}s")
    for job in result["lost"][:20]:
        console.print(f"[red]lost[/red] {job}")
    for job in result["accepted_twice"] + result["accepted_without_evidence"]:
        console.print(f"[red]bad result[/red] {job}")


def main(
    jobs: Annotated[int, typer.Option(min=1, help="Jobs to run.")] = 500,
    workers: Annotated[int, typer.Option(min=1, help="Persistent workers.")] = 4,
    slots: Annotated[int, typer.Option(min=1, help="--max-concurrent-tasks per worker.")] = 2,
    proxied: Annotated[
        int | None, typer.Option(help="Workers behind a cuttable proxy [half].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seeds the fault schedule and job lengths.")] = 1,
    max_seconds: Annotated[float, typer.Option(help="Bound on the whole run.")] = 300,
    drain_seconds: Annotated[float, typer.Option(help="No faults in this last part.")] = 90,
    submit_seconds: Annotated[float, typer.Option(help="Submits spread over this.")] = 20,
    settle_seconds: Annotated[float, typer.Option(help="Wait after all ended.")] = 3,
    fault_min: Annotated[float, typer.Option(help="Least seconds between faults.")] = 0.5,
    fault_max: Annotated[float, typer.Option(help="Most seconds between faults.")] = 3.0,
    kill_weight: Annotated[float, typer.Option(help="Odds of a worker SIGKILL.")] = 3,
    cut_weight: Annotated[float, typer.Option(help="Odds of a link cut.")] = 2,
    coordinator_weight: Annotated[float, typer.Option(help="Odds of a restart.")] = 1,
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
    """Run jobs through killed workers, a restarted coordinator and cut links; count losses."""
    opts = {k: v for k, v in locals().items() if k not in ("out", "keep")}
    opts["proxied"] = (workers + 1) // 2 if proxied is None else min(proxied, workers)
    opts["store"] = "postgresql" if db else "sqlite"
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
    bad = (
        result["lost"]
        or result["accepted_twice"]
        or result["accepted_without_evidence"]
        or result["jobs_in_store"] > result["submitted"]  # a retried submit made a second job
    )
    if keep or bad or result["worker_crashes"]:
        console.print(f"logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if bad:
        console.print("[red]FAILED[/red]: jobs lost, made twice or accepted twice")
        raise typer.Exit(1)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C: every process group killed


if __name__ == "__main__":
    typer.run(main)
