"""Fleet-scale benchmark: N simulated workers on one coordinator beside one real worker.

    .venv/bin/python bench/fleet.py --size 10000

Each simulated worker registers over the real protocol, holds its SSE stream open and
heartbeats every 30 s (spread); several share a connection pool, in a few generator
processes. Prints the coordinator's CPU (cores) and RSS with the fleet connected, and the
round trip of jobs pinned to the real worker. The scenario lives in ``corral.bench.fleet``
(``corral bench fleet`` runs it beside the others). Writes bench/results/fleet-<time>.json.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from corral.bench.fleet import fleet
from corral.bench.report import table

RESULTS = Path(__file__).resolve().parent / "results"
console = Console()


def main(
    size: Annotated[int, typer.Option(min=1, max=100_000, help="Simulated workers.")] = 10_000,
    steady: Annotated[float, typer.Option(min=1, help="Seconds measured connected.")] = 60,
    roundtrips: Annotated[int, typer.Option(min=1, help="Jobs to the real worker.")] = 100,
    procs: Annotated[int | None, typer.Option(min=1, help="Generator processes.")] = None,
    per_pool: Annotated[int, typer.Option(min=1, help="Workers per connection pool.")] = 50,
    db: Annotated[str | None, typer.Option(help="A PostgreSQL URL (default: SQLite).")] = None,
    out: Annotated[Path | None, typer.Option(help="JSON file to write.")] = None,
) -> None:
    """Connect a simulated fleet and measure what it costs the coordinator."""
    t0 = time.perf_counter()
    result = asyncio.run(fleet(size, roundtrips, steady, procs, per_pool, db=db))
    result["scenario_s"] = round(time.perf_counter() - t0, 1)
    console.print(table({"db": result["params"]["db"], "machine": result["machine"],
                         "scenarios": {"fleet": result}, "peers": {}}))  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = out or RESULTS / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {path}")


if __name__ == "__main__":
    typer.run(main)
