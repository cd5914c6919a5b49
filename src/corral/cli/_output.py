"""Printing: Rich for people, one JSON document for scripts (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def print_json(doc: BaseModel | dict[str, Any] | list[Any]) -> None:
    """Exactly one JSON document on stdout, so ``| jq`` always works."""
    if isinstance(doc, BaseModel):
        text = doc.model_dump_json(indent=2)
    else:
        text = json.dumps(doc, indent=2, default=str)
    # Plain print, not Rich: Rich would wrap long lines and add colour codes.
    print(text, flush=True)


# Columns people copy from (ids, names) or scan (states) are never folded; others give way.
_NO_WRAP = {"ID", "NAME", "JOB", "STATE", "STATUS"}


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold", no_wrap=col in _NO_WRAP, min_width=len(col))
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    return t


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``3s ago`` / ``4m ago``: short enough for a table cell."""
    if when is None:
        return "-"
    now = now or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (now - when).total_seconds()
    return f"{int(seconds)}s ago" if seconds < 60 else f"{duration(seconds)} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def elapsed(start: datetime | None, end: datetime | None) -> float | None:
    if start is None:
        return None
    end = end or datetime.now(UTC)
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    return (end - start).total_seconds()


STATE_STYLE = {
    "queued": "yellow",
    "assigned": "cyan",
    "running": "blue",
    "cancelling": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "idle": "green",
    "busy": "blue",
    "connecting": "cyan",
    "draining": "yellow",
    "offline": "dim",
}


def state(value: str) -> str:
    style = STATE_STYLE.get(str(value), "")
    return f"[{style}]{value}[/]" if style else str(value)
