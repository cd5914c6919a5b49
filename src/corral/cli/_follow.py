"""Following one job: print its output as it comes, keep a status line, return the end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

from rich.text import Text

from corral.cli import _output
from corral.cli._exit import ExitCode
from corral.client import AsyncClient, CorralError
from corral.model import JobState
from corral.protocol import JobView
from corral.sdk import METRIC_PREFIX

EXIT_BY_STATE = {
    JobState.SUCCEEDED: ExitCode.OK,
    JobState.FAILED: ExitCode.JOB_FAILED,
    JobState.CANCELLED: ExitCode.JOB_CANCELLED,
}


def parse_metric(line: str) -> dict[str, Any] | None:
    """The metrics in a ``corral.metric {...}`` line that ``corral.sdk.report`` printed."""
    if not line.startswith(METRIC_PREFIX):
        return None
    try:
        doc = json.loads(line[len(METRIC_PREFIX) :])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def format_metric(doc: dict[str, Any]) -> str:
    parts = []
    for key, value in doc.items():
        if key in {"time", "ts", "job_id", "attempt"}:
            continue
        parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


async def follow(
    client: AsyncClient, job_id: str, *, echo: bool = True, status: bool = True
) -> JobView:
    """Print the job's output as it comes (``echo``) until it ends; return the final job.

    The client resumes a dropped stream where it stopped, so nothing is shown twice or
    missed; Unreachable when no coordinator answered for its retry window.
    """
    job = await client.job(job_id)
    metric: dict[str, Any] = {}
    # Only when both streams are a terminal: Rich would otherwise pull piped stdout into
    # the status line's stream.
    live = status and _output.err.is_terminal and _output.out.is_terminal
    spinner = _output.err.status(_status_text(job, metric)) if live else None

    async def poll() -> None:
        nonlocal job
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(CorralError):
                job = await client.job(job_id)
            if spinner is not None:
                spinner.update(_status_text(job, metric))

    with spinner or contextlib.nullcontext():
        poller = asyncio.create_task(poll())
        try:
            async for line in client.logs(job_id, follow=True):
                doc = parse_metric(line)
                if doc is not None:
                    metric = doc
                    if spinner is not None:
                        spinner.update(_status_text(job, metric))
                if echo:
                    # The job's own output, as it printed it: raw, like `cat` of its log.
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    return await client.job(job_id)


def _status_text(job: JobView, metric: dict[str, Any]) -> Text:
    where = f" on {job.worker_id}" if job.worker_id else ""
    attempt = f" attempt {job.attempt}" if job.attempt > 1 else ""
    took = _output.duration(_output.elapsed(job.started_at or job.created_at, None))
    text = _output.line(job.name, " ", _output.styled(job.state, "bold"), attempt, where)
    text.append(f" · {took}")
    if metric:
        text.append(f" · {_output.shown(format_metric(metric))}")
    return text
