"""A job's or a worker's history as a table: when, what, why in words, and its cause."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table

from corral.cli import _output
from corral.protocol import EventView


def _secs(value: Any) -> str:
    return f"{value:g}s" if isinstance(value, int | float) else str(value)


def _gpus(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) and value else "none"


def summary(e: EventView, names: Mapping[str, str]) -> str:
    """What happened and why, in words, naming the attempt and the worker: "attempt 1 lost:
    no heartbeat for 120s — requeued, retry in 2s"."""
    d = e.detail
    att = f"attempt {e.attempt}" if e.attempt else "the job"
    worker = names.get(e.worker_id or "", e.worker_id or "?")
    why = f": {e.message}" if e.message else (f": {e.reason}" if e.reason else "")
    outcome = d.get("outcome")
    exit_code = f" (exit code {d['exit_code']})" if d.get("exit_code") not in (None, 0) else ""
    by = f" by {e.actor}" if e.actor else ""
    kind = e.kind
    if kind == "job.submitted":
        return f"submitted{by}"
    if kind == "job.assigned":
        gpus = f" with {d['gpus']} GPUs" if d.get("gpus") else ""
        return f"{att} assigned to {worker}{gpus}"
    if kind == "job.running":
        return f"{att} running on {worker}"
    if kind == "job.requeued":
        retry = f", retry in {_secs(d['backoff_s'])}" if "backoff_s" in d else ""
        return f"{att} {outcome or 'ended'}{why}{exit_code} — requeued{retry}"
    if kind in ("job.succeeded", "job.failed", "job.cancelled"):
        state = kind.removeprefix("job.")
        ended = f"{outcome}, " if outcome and outcome != state else ""
        return f"{att} {ended}{state}{why}{exit_code}"
    if kind == "job.checkpointed":
        return f"{att} stored a checkpoint of step {d.get('step')} ({_output.size(d.get('size'))})"
    if kind == "job.resumed":
        return (f"{att} on {worker} resumed from the checkpoint of step {d.get('step')}"
                f" (attempt {d.get('from_attempt')})")  # fmt: skip
    if kind == "job.output_stored":
        return f"{att} stored output {d.get('name')} ({_output.size(d.get('size'))})"
    if kind == "job.cancel_requested":
        return f"cancel requested{by}"
    if kind == "worker.registered":
        parts = [
            f"from {d.get('address') or '?'}",
            f"host {d['hostname']}" if d.get("hostname") else None,
            f"{d['cpu_count']} CPUs" if d.get("cpu_count") else None,
            f"GPUs {_gpus(d.get('gpus'))}",
            f"{d['slots']} slots" if d.get("slots") else None,
            ", ".join(f"{k}={v}" for k, v in (d.get("labels") or {}).items()) or None,
            f"version {d['version']}" if d.get("version") else None,
            f"still running {d['running']}" if d.get("running") else None,
        ]
        return "registered " + ", ".join(p for p in parts if p)
    if kind == "worker.offline":
        return f"offline{why}"
    words = kind.split(".", 1)[-1].replace("_", " ")
    return f"{words}{why}{by if kind == 'worker.created' else ''}"


def table(events: Iterable[EventView], names: Mapping[str, str]) -> Table:
    """The attempt and the worker are named in WHY (and are fields of ``--json``)."""
    rows = [(_output.clock(e.at), e.kind, summary(e, names), e.cause) for e in events]
    return _output.table(None, ("TIME", "EVENT", "WHY", "CAUSE"), rows)
