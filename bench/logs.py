"""Log benchmark: what a long job log costs the coordinator, stored and read.

    .venv/bin/python bench/logs.py --log-mb 100 --readers 1,4,8

Starts a coordinator (a child process, SQLite in a temporary directory), plays one worker by
hand and ships a job's output of ``--log-mb`` MB in 64 KiB batches, as a worker does. Then,
for each reader count, that many clients read the whole log at once (``GET .../logs``) while
the coordinator's resident memory is sampled. Prints a table (upload rate, coordinator RSS
before, after the upload and at its peak under each reader count, and the time each read
took) and writes bench/results/logs-<time>.json.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness_e2e import ADMIN_KEY, Fleet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 64 * 1024
console = Console()


def _rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1e6


def _ship(fleet: Fleet, mb: int) -> tuple[str, float]:
    """One job whose attempt ships ``mb`` MB of output; returns (job id, seconds)."""
    created = fleet.create_worker("logger")
    admin = httpx.Client(
        base_url=fleet.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    )
    worker = httpx.Client(
        base_url=fleet.url, headers={"X-Worker-Token": created["token"]}, timeout=30
    )
    with admin, worker:
        worker.post("/api/workers/register", json={"slots": 1, "persistent": True})
        job = admin.post("/api/queue/submit", json={"command": ["x"]}).json()
        with worker.stream("GET", "/api/workers/stream") as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    break
        line = ("y" * 1023 + "\n").encode()
        data = (line * (BATCH // len(line))).decode()
        started = time.monotonic()
        for seq in range(mb * 1024 * 1024 // BATCH):
            r = worker.post(
                f"/api/workers/job/{job['id']}/logs", json={"attempt": 1, "seq": seq, "data": data}
            )
            r.raise_for_status()
        took = time.monotonic() - started
        worker.post(
            f"/api/workers/job/{job['id']}/status",
            json={"attempt": 1, "status": "succeeded", "exit_code": 0},
        )
    return job["id"], took


def _read(url: str, job_id: str, out: list[float]) -> None:
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with (
        httpx.Client(base_url=url, headers=headers, timeout=120) as c,
        c.stream("GET", f"/api/jobs/{job_id}/logs") as r,
    ):
        for _ in r.iter_bytes(1 << 16):
            pass
    out.append(time.monotonic() - started)


def _readers(fleet: Fleet, pid: int, job_id: str, count: int) -> dict[str, Any]:
    times: list[float] = []
    threads = [
        threading.Thread(target=_read, args=(fleet.url, job_id, times)) for _ in range(count)
    ]
    peak = _rss_mb(pid)
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, _rss_mb(pid))
        time.sleep(0.05)
    return {
        "readers": count,
        "peak_rss_mb": round(peak, 1),
        "read_s_max": round(max(times), 2) if times else None,
    }


def main(
    log_mb: Annotated[int, typer.Option(min=1, help="Size of the job's output, MB.")] = 100,
    readers: Annotated[str, typer.Option(help="Reader counts to try, comma-separated.")] = "1,4,8",
    out: Annotated[Path | None, typer.Option(help="JSON file to write.")] = None,
) -> None:
    """Store one long log, then read it with several readers at once; sample the RSS."""
    counts = [int(c) for c in readers.split(",") if c.strip()]
    root = Path(tempfile.mkdtemp(prefix="corral-logs-"))
    fleet = Fleet(root, f"sqlite:///{root / 'corral.db'}")
    try:
        # One worker played by hand: its stream opens once, and may then stay closed.
        server = fleet.start_server(CORRAL_SERVER__STREAM_GRACE_S="3600")
        base = _rss_mb(server.pid)
        job_id, took = _ship(fleet, log_mb)
        stored = _rss_mb(server.pid)
        rows = [_readers(fleet, server.pid, job_id, n) for n in counts]
    finally:
        fleet.close()
    result = {
        "params": {"log_mb": log_mb, "readers": counts},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "upload_mb_per_s": round(log_mb / took, 1),
        "rss_mb": {"started": round(base, 1), "after_upload": round(stored, 1)},
        "reads": rows,
    }
    table = Table(title=f"a {log_mb} MB job log", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("upload (64 KiB batches, one at a time)", f"{result['upload_mb_per_s']} MB/s")
    table.add_row(
        "coordinator RSS: started / after the upload",
        f"{result['rss_mb']['started']} / {result['rss_mb']['after_upload']} MB",
    )
    for row in rows:
        table.add_row(
            f"peak RSS with {row['readers']} reader(s) at once; slowest read",
            f"{row['peak_rss_mb']} MB; {row['read_s_max']} s",
        )
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS / f"logs-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    typer.run(main)
