"""``corral bench``: the benchmark scenarios of ``corral.bench``, one table and a JSON file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from corral.cli import _output
from corral.cli._exit import ExitCode, Failure

_SIZE = typer.Option  # the sizes: each a flag, defaults from corral.bench.Sizes


def bench(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(
            help="floors, dispatch, roundtrip, calls, kill, fleet (default: all).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        str, typer.Option(help="sqlite, or a PostgreSQL URL: a fresh database per scenario.")
    ] = "sqlite",
    out: Annotated[Path | None, typer.Option(help="Write the figures here as JSON.")] = None,
    compare: Annotated[
        str, typer.Option(help="Peers to run the same workloads on: ray,celery (if installed).")
    ] = "",
    jobs: Annotated[int, _SIZE(min=1, help="dispatch: `true` jobs.")] = 1000,
    workers: Annotated[int, _SIZE(min=1, max=64, help="Local workers.")] = 2,
    slots: Annotated[int, _SIZE(min=1, max=64, help="Slots per local worker.")] = 4,
    roundtrips: Annotated[int, _SIZE(min=1, help="roundtrip, calls, peers: one at a time.")] = 100,
    spawns: Annotated[int, _SIZE(min=1, help="floors: `true` spawns.")] = 2000,
    requests: Annotated[int, _SIZE(min=1, help="floors: HTTP POSTs.")] = 4000,
    calls: Annotated[int, _SIZE(min=1, help="calls: no-op calls in one map.")] = 2000,
    kills: Annotated[int, _SIZE(min=1, max=20, help="kill: workers SIGKILLed.")] = 3,
    fleet_size: Annotated[
        int, _SIZE(min=1, max=100_000, help="fleet: simulated workers.")
    ] = 10_000,
    fleet_steady: Annotated[float, _SIZE(min=1, help="fleet: seconds measured connected.")] = 60,
    fleet_roundtrips: Annotated[int, _SIZE(min=1, help="fleet: jobs to the real worker.")] = 100,
    peer_tasks: Annotated[int, _SIZE(min=1, help="--compare: no-op tasks.")] = 2000,
    peer_process_tasks: Annotated[int, _SIZE(min=1, help="--compare: `true` tasks.")] = 500,
) -> None:
    """Measure Corral on this machine: throughput, round trips, CPU and memory, against the
    machine's floors and, with --compare, against Ray and Celery. See docs/PERFORMANCE.md."""
    from corral.bench import SCENARIOS, Sizes, run_suite
    from corral.bench.report import table

    names = scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise Failure(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    if db != "sqlite" and not db.startswith(("postgresql", "postgres:")):
        raise Failure("--db: sqlite or a postgresql:// URL")
    peers = [p.strip() for p in compare.split(",") if p.strip()]
    sizes = Sizes(jobs=jobs, workers=workers, slots=slots, roundtrips=roundtrips, spawns=spawns,
                  requests=requests, calls=calls, kills=kills, fleet_size=fleet_size,
                  fleet_steady_s=fleet_steady, fleet_roundtrips=fleet_roundtrips,
                  peer_tasks=peer_tasks, peer_process_tasks=peer_process_tasks)  # fmt: skip

    def progress(name: str) -> None:
        _output.err.print(f"running {name}…")

    result = asyncio.run(run_suite(names, sizes, db, peers, progress))
    _output.out.print(table(result))
    for name, r in {**result["scenarios"], **result["peers"]}.items():
        if r.get("skipped"):
            _output.err.print(f"{name}: skipped: {r['skipped']}")
        if r.get("error"):
            _output.err.print(f"{name}: failed: {r['error']}")
    text = json.dumps(result, indent=2) + "\n"
    if out is not None:
        out.write_text(text)
        _output.err.print(f"wrote {out}")
    else:
        _output.out.print_json(text)
    failed = [n for n, r in result["scenarios"].items() if "error" in r]
    if failed:
        raise Failure(f"scenario failed: {', '.join(failed)}", ExitCode.JOB_FAILED)
