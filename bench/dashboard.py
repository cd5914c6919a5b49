"""What the dashboard's pages and /metrics cost on a large store: a coordinator with W
workers and J jobs (queued: no worker takes them), each page fetched N times.

    .venv/bin/python bench/dashboard.py --workers 1000 --jobs 10000

Prints a table (per page: p50 and p99 of the answer, its size) and writes
bench/results/dashboard-<time>.json.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer
from rich.console import Console
from rich.table import Table

from corral.bench._stats import machine, now_iso, p50_p99
from corral.local._procs import free_port

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def main(
    workers: Annotated[int, typer.Option(min=0, help="Workers in the store.")] = 1000,
    jobs: Annotated[int, typer.Option(min=1, help="Jobs in the store.")] = 10_000,
    rounds: Annotated[int, typer.Option(min=1, help="Fetches of each page.")] = 20,
    db: Annotated[str | None, typer.Option(help="A PostgreSQL URL (default: SQLite).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file to write.")] = None,
) -> None:
    key, token = f"ck_bench_{secrets.token_hex(16)}", secrets.token_urlsafe(32)
    port = free_port("127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="corral-dash-") as tmp:
        env = {**os.environ, "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY": key,
               "CORRAL_SERVER__METRICS_TOKEN": token}  # fmt: skip
        argv = [sys.executable, "-m", "corral.cli", "server", "--port", str(port),
                "--data-dir", f"{tmp}/server", *(["--db", db] if db else [])]  # fmt: skip
        server = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            figures = _measure(f"http://127.0.0.1:{port}", key, token, server.pid, workers,
                               jobs, rounds)  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)
    store = db.split(":", 1)[0].split("+", 1)[0] if db else "sqlite"  # never its password
    doc = {"scenario": "dashboard", "at": now_iso(), "machine": machine(), "db": store,
           "workers": workers, "jobs": jobs, "rounds": rounds, **figures}  # fmt: skip
    table = Table(title=f"dashboard: {workers:,} workers, {jobs:,} jobs ({doc['db']})")
    for col in ("page", "p50 ms", "p99 ms", "KiB"):
        table.add_column(col, justify="left" if col == "page" else "right")
    for name, f in figures["pages"].items():
        table.add_row(name, f"{f['p50_ms']:.1f}", f"{f['p99_ms']:.1f}", f"{f['bytes'] / 1024:.0f}")
    console.print(table)
    console.print(f"coordinator RSS {figures['rss_mib']:.0f} MiB; store filled in "
                  f"{figures['fill_s']:.1f} s")  # fmt: skip
    path = out or RESULTS / f"dashboard-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"wrote {path}")


def _measure(url: str, key: str, token: str, pid: int, workers: int, jobs: int,
             rounds: int) -> dict[str, Any]:  # fmt: skip
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            if api.get("/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the coordinator did not start")
        time.sleep(0.2)
    began = time.monotonic()
    for i in range(workers):
        spec = {"name": f"w{i:05d}", "worker_type": "persistent", "labels": {"pool": "p"}}
        api.post("/api/admin/workers", json=spec).raise_for_status()
    first = None
    for start in range(0, jobs, 1000):
        batch = [{"command": ["true"], "name": f"job-{n}", "worker_labels": {"pool": "none"}}
                 for n in range(start, min(start + 1000, jobs))]  # fmt: skip
        r = api.post("/api/queue/submit-batch", json={"jobs": batch})
        r.raise_for_status()
        first = first or r.json()["jobs"][0]["id"]
    fill_s = time.monotonic() - began
    browser = httpx.Client(base_url=url, timeout=60)
    login = browser.post("/ui/login", data={"key": key}, headers={"Origin": url})
    if login.status_code != 303:
        raise SystemExit(f"login: {login.status_code}")
    last_page = max((workers + 49) // 50, 1)
    pages = {
        "/ui/jobs": browser, "/ui/jobs?state=queued&name=job-99": browser,
        f"/ui/jobs/{first}": browser, "/ui/fleet": browser,
        f"/ui/fleet?page={last_page}": browser, "/metrics": None,
    }  # fmt: skip
    scrape = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=60)  # fmt: skip
    out: dict[str, Any] = {}
    for path, client in pages.items():
        c = client or scrape
        times, size = [], 0
        for _ in range(rounds):
            t0 = time.perf_counter()
            r = c.get(path)
            times.append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                raise SystemExit(f"{path}: {r.status_code} {r.text[:200]}")
            size = len(r.content)
        stats = p50_p99(times)
        out[path] = {"p50_ms": stats["p50"], "p99_ms": stats["p99"], "bytes": size}
    rss = psutil.Process(pid).memory_info().rss / 2**20
    return {"pages": out, "rss_mib": rss, "fill_s": fill_s}


if __name__ == "__main__":
    typer.run(main)
