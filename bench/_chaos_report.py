"""Reading a chaos run back: what was lost, accepted twice, killed though healthy, and how
long each kind of fault took to get over — from the API and the job's history only."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _faults import KINDS, Run
from rich.console import Console
from rich.table import Table

from corral.client import Client

console = Console()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; ``q`` in 0..100."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def ts(text: Any) -> datetime | None:
    if text is None or isinstance(text, datetime):
        return text
    return datetime.fromisoformat(text)


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_s": round(statistics.median(values), 2),
        "p90_s": round(percentile(values, 90), 2),
        "max_s": round(max(values), 2),
    }


def logged_attempts(client: Client, job_id: str, token: str) -> set[int]:
    """The attempts whose own process printed the job's token line (``TOKEN attempt N``,
    N from the worker's CORRAL_ATTEMPT) into the output the coordinator kept."""
    out = set()
    for line in client.logs(job_id):
        words = line.split()
        if len(words) == 3 and words[:2] == [token, "attempt"] and words[2].isdigit():
            out.add(int(words[2]))
    return out


class Blame:
    """Which fault a moment followed: the latest one that began before it, within reach."""

    def __init__(self, faults: list[dict[str, Any]], reach_s: float) -> None:
        self.faults = sorted(faults, key=lambda f: f["start"])
        self.reach = timedelta(seconds=reach_s)

    def __call__(self, when: datetime | None) -> str:
        if when is None:
            return "none"
        before = [f for f in self.faults if f["start"] <= when]
        if not before:
            return "none"
        last = before[-1]
        end = last["end"] or when
        return str(last["fault"]) if when - end <= self.reach else "none"


def _disturbed(run: Run, worker_id: str | None, since: datetime, until: datetime) -> bool:
    """Was this worker killed or cut off while the attempt held it? Then losing the attempt
    was right; otherwise the attempt was healthy."""
    names = {w.worker_id: w.name for w in run.workers}
    slack = timedelta(seconds=2)
    if any(w == worker_id and since - slack <= t <= until for w, t in run.kills):
        return True
    for f in run.faults:
        if f["fault"] == "cut" and f["target"] == names.get(worker_id or ""):
            end = f["end"] or until
            if f["start"] <= until and end >= since - slack:
                return True
    return False


def analyse(run: Run, client: Client, reach_s: float) -> dict[str, Any]:
    stored = [j.model_dump(mode="json") for j in client.jobs()]
    jobs = {tok: client.job(jid).model_dump(mode="json") for tok, jid in run.job_ids.items()}
    names = {w.worker_id: w.name for w in run.workers}
    blame = Blame(run.faults, reach_s)
    lost, twice, unproven, reran = [], [], [], 0
    per_fault: dict[str, Counter[str]] = defaultdict(Counter)
    per_job: Counter[int] = Counter()
    outcomes: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    without_cause: list[dict[str, Any]] = []
    for token, _ in run.specs:
        job = jobs.get(token)
        if job is None:
            lost.append({"token": token, "state": "never submitted"})
            per_fault["none"]["lost"] += 1
            continue
        attempts = job["attempts"] or []
        per_job[len(attempts)] += 1
        outcomes.update(str(a["outcome"]) for a in attempts)
        wins = [a["number"] for a in attempts if a["outcome"] == "succeeded"]
        if job["state"] != "succeeded":
            last = ts(attempts[-1]["finished_at"]) if attempts else None
            per_fault[blame(last)]["lost"] += 1
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
            per_fault[blame(ts(attempts[-1]["finished_at"]))]["accepted_twice"] += 1
        if any(a["outcome"] == "lost" for a in attempts):
            _losses(run, client, job, blame, per_fault, reasons, without_cause)
        done_file = run.runs_dir / f"{token}.done"
        ran_to_end = done_file.read_text().split() if done_file.exists() else []
        reran += len(ran_to_end) > 1
        if job["state"] == "succeeded":
            logged = logged_attempts(client, job["id"], token)
            if (
                wins != [job["attempt"]]
                or str(job["attempt"]) not in ran_to_end
                or (job["attempt"] not in logged)
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
    finished = sorted(d for j in jobs.values() if (d := ts(j["finished_at"])) is not None)
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
        "lost_attempts_by_reason": dict(reasons),
        "lost_attempts_without_a_cause": without_cause,
        "per_fault": {
            k: _fault_row(run, k, per_fault[k], finished)
            for k in (*KINDS, "none")
            if k in per_fault or any(f["fault"] == k for f in run.faults)
        },
        "recovery": recovery(run, jobs),
    }


def _losses(
    run: Run,
    client: Client,
    job: dict[str, Any],
    blame: Blame,
    per_fault: dict[str, Counter[str]],
    reasons: Counter[str],
    without_cause: list[Any],
) -> None:
    """Each lost attempt: why, from the job's history (with the cause that decided it), and
    whether its worker had been disturbed or it was killed though healthy."""
    entries = [e for e in client.events(job["id"]) if e.detail.get("outcome") == "lost"]
    by_attempt = {e.attempt: e for e in entries}
    for a in job["attempts"] or []:
        if a["outcome"] != "lost":
            continue
        entry = by_attempt.get(a["number"])
        if entry is None or not entry.reason or not entry.cause:
            without_cause.append({"id": job["id"], "attempt": a["number"]})
            continue
        reasons[entry.reason] += 1
        at = entry.at.astimezone(UTC)
        assigned = ts(a["assigned_at"]) or at
        if entry.reason == "declined":
            per_fault[blame(at)]["declined"] += 1
        elif not _disturbed(run, a["worker_id"], assigned, at):
            per_fault[blame(at)]["healthy_attempts_killed"] += 1


def _fault_row(
    run: Run, kind: str, counted: Counter[str], finished: list[datetime]
) -> dict[str, Any]:
    """What followed this kind of fault, and the time from each one's end until a job ended
    again (the fleet making progress)."""
    gaps = []
    for f in run.faults:
        if f["fault"] != kind or f["end"] is None:
            continue
        after = next((d for d in finished if d >= f["end"]), None)
        if after is not None:
            gaps.append((after - f["end"]).total_seconds())
    return {
        "injected": sum(1 for f in run.faults if f["fault"] == kind),
        "lost": counted["lost"],
        "accepted_twice": counted["accepted_twice"],
        "healthy_attempts_killed": counted["healthy_attempts_killed"],
        "declined": counted["declined"],
        "recover": stats(gaps),
    }


def recovery(run: Run, jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """For each SIGKILLed worker, the attempts it held at that moment, and how long until
    each job's next attempt started (on another worker, or on the same one restarted)."""
    seen: set[tuple[str, int]] = set()
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
                if a["outcome"] == "succeeded":  # its report got there, or it was adopted
                    finished += 1
                    continue
                for b in attempts:
                    start = started(token, b, run.runs_dir)
                    if b["number"] > a["number"] and start is not None:
                        gap = (start - when).total_seconds()
                        (other if b["worker_id"] != worker_id else same).append(gap)
                        break
                else:
                    never += 1
    return {
        "held_at_kill": len(seen),
        "finished_anyway": finished,
        "never_ran_again": never,
        "to_next_attempt": stats(other + same),
        "on_another_worker": stats(other),
        "on_the_restarted_worker": stats(same),
    }


def started(token: str, attempt: dict[str, Any], runs_dir: Path) -> datetime | None:
    """When an attempt's process started: the coordinator's ``started_at``, else (its
    running report never arrived, only its final one) the job's own pid file."""
    if attempt["started_at"]:
        return ts(attempt["started_at"])
    pids = list(runs_dir.glob(f"{token}.{attempt['number']}.*.pid"))
    if not pids:
        return None
    return datetime.fromtimestamp(min(p.stat().st_mtime for p in pids), UTC)


def show(result: dict[str, Any]) -> None:
    p, r = result["params"], result["recovery"]
    table = Table(title="chaos benchmark", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row(
        "jobs / workers x slots (proxied)",
        f"{p['jobs']} / {p['workers']} x {p['slots']} ({p['proxied']})",
    )
    table.add_row("store / coordinators", f"{p['store']} / {p['coordinators']}")
    table.add_row(
        "seed / wall time",
        f"{p['seed']} / {result['wall_s']}s (last fault at "
        f"{result['last_fault_s']}s, all ended at {result['all_ended_s'] or 'never'}s)",
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
    table.add_row(
        "lost attempts without a cause", str(len(result["lost_attempts_without_a_cause"]))
    )
    table.add_row(
        "lost attempts by reason",
        ", ".join(f"{n} {k}" for k, n in sorted(result["lost_attempts_by_reason"].items())) or "-",
    )
    a = result["attempts_per_job"]
    table.add_row("attempts per job mean / max", f"{a['mean']} / {a['max']}")
    table.add_row(
        "held by killed workers",
        f"{r['held_at_kill']} ({r['finished_anyway']} "
        f"finished anyway, {r['never_ran_again']} never ran again)",
    )
    s = r["to_next_attempt"]
    if s["count"]:
        table.add_row(
            "worker death → next attempt p50 / p90", f"{s['p50_s']}s / {s['p90_s']}s ({s['count']})"
        )
    console.print(table)
    per = Table(title="per fault", title_justify="left")
    for col in (
        "fault",
        "injected",
        "lost",
        "twice",
        "healthy killed",
        "declined",
        "recover p50 / max",
    ):
        per.add_column(col, justify="left" if col == "fault" else "right")
    for kind, row in result["per_fault"].items():
        rec = row["recover"]
        per.add_row(
            kind,
            str(row["injected"]),
            str(row["lost"]),
            str(row["accepted_twice"]),
            str(row["healthy_attempts_killed"]),
            str(row["declined"]),
            f"{rec['p50_s']}s / {rec['max_s']}s" if rec["count"] else "-",
        )
    console.print(per)
    settings = ", ".join(
        f"{k.removeprefix('CORRAL_SERVER__')}={v}" for k, v in result["server_env"].items()
    )
    console.print(f"coordinator: {settings}; worker heartbeat {p['heartbeat']}s")
    for job in result["lost"][:20]:
        console.print(f"[red]lost[/red] {job}")
    for job in result["accepted_twice"] + result["accepted_without_evidence"]:
        console.print(f"[red]bad result[/red] {job}")
