"""``corral up --demo``: a sweep of real training jobs, live progress, a table of results."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any

from rich.live import Live

from corral.cli import _output
from corral.cli._follow import parse_metric
from corral.cli.jobs import worker_names
from corral.client import AsyncClient, CorralError
from corral.examples import digits
from corral.model import TERMINAL_JOB_STATES, JobState
from corral.protocol import JobView


@dataclass
class _Run:
    params: dict[str, Any]
    job: JobView
    metric: dict[str, Any] = field(default_factory=dict)


async def run_demo(client: AsyncClient, *, epochs: int = 10, poll_s: float = 0.5) -> int:
    """Submit the digits sweep, show it run, print the results; 0 if every job succeeded."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    runs: list[_Run] = []
    for params in digits.sweep(epochs=epochs):
        job = await client.submit(
            # This interpreter: the local workers share it, and it has scikit-learn.
            digits.command(params, python=sys.executable),
            name=f"digits-h{params['hidden']}-lr{params['lr']}",
            retries=1,
            timeout=600,
        )
        runs.append(_Run(params, job))
    _output.err.print(f"submitted {len(runs)} digits training jobs (one per setting)")

    streams = [asyncio.create_task(_metrics(client, run)) for run in runs]
    try:
        # Transient: on a terminal the live table gives way to the results table below.
        live = Live(_progress(runs), console=_output.out, refresh_per_second=4, transient=True)
        with live:
            while not all(r.job.state in TERMINAL_JOB_STATES for r in runs):
                await asyncio.sleep(poll_s)
                jobs = await asyncio.gather(*(client.job(r.job.id) for r in runs))
                for run, job in zip(runs, jobs, strict=True):
                    run.job = job
                live.update(_progress(runs))
    except asyncio.CancelledError:
        # Interrupted: leave no demo job queued behind for the next start to run.
        for run in runs:
            if run.job.state not in TERMINAL_JOB_STATES:
                with contextlib.suppress(CorralError):
                    await client.cancel(run.job.id)
        raise
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)

    names = await worker_names(client)
    curves = await asyncio.gather(*(_loss_curve(client, r.job.id) for r in runs))
    _output.out.print(_results(runs, names, curves))
    for line in _resumed(runs):
        _output.out.print(line, markup=False, highlight=False)
    workers = len({r.job.worker_id for r in runs if r.job.worker_id})
    _output.out.print(
        f"{len(runs)} jobs on {workers} workers in {loop.time() - started:.1f}s", highlight=False
    )
    done = [r for r in runs if r.job.state == JobState.SUCCEEDED and r.job.result]
    if done:
        best = max(done, key=lambda r: r.job.result.get("accuracy", 0))  # type: ignore[union-attr]
        _output.out.print(
            f"best: hidden={best.params['hidden']} lr={best.params['lr']} "
            f"accuracy={best.job.result['accuracy']:.4f}"  # type: ignore[index]
        )
    failed = [r for r in runs if r.job.state != JobState.SUCCEEDED]
    for run in failed:
        _output.err.print(
            _output.line(
                _output.styled(f"{run.job.name} {run.job.state}", "red"),
                ": ",
                run.job.error or "",
                f" (corral jobs logs {run.job.id})",
            )
        )
    return 1 if failed else 0


async def _metrics(client: AsyncClient, run: _Run) -> None:
    """Follow one job's output for its ``corral.metric`` lines (the live epoch column)."""
    with contextlib.suppress(CorralError):
        async for line in client.logs(run.job.id, follow=True):
            doc = parse_metric(line)
            if doc is not None:
                run.metric = doc


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _progress(runs: list[_Run]) -> Any:
    rows = []
    for r in runs:
        took = _output.elapsed(r.job.started_at, r.job.finished_at)
        rows.append(
            (
                r.job.name,
                _output.state(r.job.state),
                f"{r.metric.get('step', 0)}/{r.params['epochs']}",
                _fmt(r.metric.get("loss")),
                _fmt(r.metric.get("accuracy")),
                _output.duration(took) if took is not None else "-",
            )
        )
    cols = ("JOB", "STATE", "EPOCH", "LOSS", "ACCURACY", "TIME")
    return _output.table("digits sweep", cols, rows)


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float]) -> str:
    """A curve in a line of block characters, high values high."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(_BARS[round((v - low) / span * (len(_BARS) - 1))] for v in values)


async def _loss_curve(client: AsyncClient, job_id: str) -> str:
    """The run's loss per epoch, as the coordinator stored what it reported; the points of
    the attempt that finished (a run resumed after its worker died has two)."""
    try:
        points = (await client.metrics(job_id, ["loss"])).get("loss", [])
    except CorralError:
        return "-"
    last = points[-1].attempt if points else 0
    return sparkline([p.value for p in points if p.attempt == last and p.value is not None])


def _results(runs: list[_Run], names: dict[str, str], curves: list[str]) -> Any:
    rows = []
    for r, curve in zip(runs, curves, strict=True):
        res = r.job.result or {}
        rows.append(
            (
                r.params["hidden"],
                r.params["lr"],
                _fmt(res.get("loss")),
                _fmt(res.get("accuracy")),
                curve,
                names.get(r.job.worker_id or "", r.job.worker_id or "-"),
                _output.state(r.job.state),
            )
        )
    cols = ("HIDDEN", "LR", "LOSS", "ACCURACY", "LOSS BY EPOCH", "WORKER", "STATE")
    return _output.table("results", cols, rows)


def _resumed(runs: list[_Run]) -> list[str]:
    """A line for each run that went on from its checkpoint after losing its worker."""
    return [f"{r.job.name} resumed at epoch {r.job.result['resumed_at_epoch']} on another"
            " worker, from its checkpoint" for r in runs
            if r.job.result and r.job.result.get("resumed_at_epoch")]  # fmt: skip
