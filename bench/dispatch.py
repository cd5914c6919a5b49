"""Dispatch benchmark: N no-op jobs through a fresh coordinator and K local workers.

    .venv/bin/python bench/dispatch.py --jobs 1000 --workers 2 --slots 4

The scenario lives in ``corral.bench.dispatch`` (``corral bench dispatch`` runs it beside
the others); this script keeps its options and JSON field names, so scripts that compare
runs keep working. Prints a table and writes bench/results/dispatch-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from corral.bench.dispatch import dispatch
from corral.model import JobState

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def main(
    jobs: Annotated[int, typer.Option(min=1, help="No-op jobs to run.")] = 1000,
    workers: Annotated[int, typer.Option(min=1, help="Local persistent workers.")] = 2,
    slots: Annotated[int, typer.Option(min=1, help="--max-concurrent-tasks per worker.")] = 4,
    command: Annotated[str, typer.Option(help="The job's command.")] = "true",
    concurrency: Annotated[int, typer.Option(min=1, help="Submits in flight.")] = 16,
    idle_jobs: Annotated[
        int, typer.Option(min=0, help="Then this many, one at a time, on an idle fleet.")
    ] = 50,
    db: Annotated[str | None, typer.Option(help="A PostgreSQL URL (default: SQLite).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file to write.")] = None,
) -> None:
    """Measure submit rate, end-to-end throughput and dispatch latency."""
    result = asyncio.run(
        dispatch(jobs, workers, slots, shlex.split(command), concurrency, idle_jobs, db)
    )
    table = Table(title="dispatch benchmark", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("jobs / workers x slots", f"{jobs} / {workers} x {slots}")
    table.add_row("command", command)
    table.add_row("outcome", ", ".join(f"{n} {s}" for s, n in sorted(result["states"].items())))
    table.add_row("submit rate", f"{result['submit_per_s']:.0f} jobs/s")
    table.add_row("end to end", f"{result['jobs_per_s']:.0f} jobs/s ({result['total_s']:.2f}s)")
    for key, label in (
        ("submit_to_start_ms", "submit→start"),
        ("submit_to_end_ms", "submit→end"),
        ("idle_submit_to_start_ms", f"one at a time ({idle_jobs}): submit→start"),
        ("idle_submit_to_end_ms", f"one at a time ({idle_jobs}): submit→end"),
    ):
        if result[key]:
            table.add_row(f"{label} p50 / p99", f"{result[key]['p50']} / {result[key]['p99']} ms")
    for role, ms in result["cpu_ms_per_job"].items():
        table.add_row(f"CPU per job: {role}", f"{ms} ms")
    for role, mib in result["rss_mib"].items():
        table.add_row(f"RSS: {role}", f"{mib} MiB")
    console.print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS / f"dispatch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")
    if set(result["states"]) != {JobState.SUCCEEDED}:
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
