"""Following one job: stream its output, keep a status line, return the final job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from typing import Any

import httpx

from corral.cli import _output
from corral.cli._client import Client
from corral.cli._exit import ExitCode
from corral.model import JobState
from corral.protocol import JobView
from corral.protocol.transport import Unreachable
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


class Lines:
    """Joins output chunks into whole lines, so a status line never splits one."""

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, data: str) -> list[str]:
        self._buf += data
        *whole, self._buf = self._buf.split("\n")
        return [line + "\n" for line in whole]

    def rest(self) -> str:
        rest, self._buf = self._buf, ""
        return rest


async def follow(
    client: Client,
    job_id: str,
    *,
    echo: bool = True,
    status: bool = True,
    give_up_after_s: float = 60.0,
) -> JobView:
    """Print the job's output as it comes (``echo``) until it ends; return the final job.

    A dropped stream (coordinator restart, network) is reopened after the last event seen
    (Last-Event-ID), so nothing is shown twice or missed.
    Raises Unreachable when no coordinator answered for ``give_up_after_s``.
    """
    job = await client.job(job_id)
    last_id = 0
    lines: dict[int, Lines] = {}
    metric: dict[str, Any] = {}
    # Only when both streams are a terminal: Rich would otherwise pull piped stdout into
    # the status line's stream.
    live = status and _output.err.is_terminal and _output.out.is_terminal
    spinner = _output.err.status(_status_text(job, metric)) if live else None

    def show(attempt: int, text: str) -> None:
        nonlocal metric
        for line in lines.setdefault(attempt, Lines()).feed(text):
            doc = parse_metric(line)
            if doc is not None:
                metric = doc
                if spinner is not None:
                    spinner.update(_status_text(job, metric))
            if echo:
                sys.stdout.write(line)
                sys.stdout.flush()

    async def poll() -> None:
        nonlocal job
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Unreachable, httpx.HTTPError):
                job = await client.job(job_id)
            if spinner is not None:
                spinner.update(_status_text(job, metric))

    loop = asyncio.get_running_loop()
    with spinner or contextlib.nullcontext():
        poller = asyncio.create_task(poll())
        try:
            failing_since: float | None = None
            ended = False
            while not ended:
                try:
                    async for event, data, event_id in client.follow(job_id, after=last_id):
                        failing_since = None
                        if event == "end":
                            ended = True
                            break
                        if event != "log":
                            continue
                        last_id = event_id or last_id
                        show(int(data.get("attempt", 0)), str(data.get("data", "")))
                except (httpx.TransportError, Unreachable):
                    failing_since = failing_since or loop.time()
                    if loop.time() - failing_since > give_up_after_s:
                        raise
                if not ended:
                    await asyncio.sleep(1.0)  # the stream ended early: reopen it
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
    if echo:
        for buf in lines.values():
            rest = buf.rest()
            if rest:
                sys.stdout.write(rest + "\n")
        sys.stdout.flush()
    return await client.job(job_id)


def _status_text(job: JobView, metric: dict[str, Any]) -> str:
    where = f" on {job.worker_id}" if job.worker_id else ""
    attempt = f" attempt {job.attempt}" if job.attempt > 1 else ""
    took = _output.duration(_output.elapsed(job.started_at or job.created_at, None))
    text = f"{job.name} [bold]{job.state}[/]{attempt}{where} · {took}"
    if metric:
        text += f" · {format_metric(metric)}"
    return text
