"""Printing: Rich for people, one JSON document for scripts (``--json``).

What a user or a worker supplied (names, labels, commands, errors, hostnames, results) is
shown as text: never read as Rich markup, and its control characters escaped, so a name
cannot break a table, colour the terminal, move the cursor or forge a line of output.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what follows them.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(value: object, *, newlines: bool = False) -> str:
    """``value`` as a string with each control character escaped (``\\x1b``, ``\\n``);
    ``newlines`` keeps line breaks, for a block of text such as an error's traceback."""
    text = "" if value is None else str(value)

    def escape(m: re.Match[str]) -> str:
        ch = m.group()
        return ch if newlines and ch == "\n" else ch.encode("unicode_escape").decode("ascii")

    return _UNSAFE.sub(escape, text)


def line(*parts: object, newlines: bool = False) -> Text:
    """One line of output: each part that is not already Text is shown as plain text."""
    return Text.assemble(
        *(p if isinstance(p, Text) else shown(p, newlines=newlines) for p in parts)
    )


def styled(value: object, style: str) -> Text:
    return Text(shown(value), style=style)


def print_json(doc: BaseModel | dict[str, Any] | list[Any]) -> None:
    """Exactly one JSON document on stdout, so ``| jq`` always works."""
    if isinstance(doc, BaseModel):
        text = doc.model_dump_json(indent=2)
    else:
        text = json.dumps(doc, indent=2, default=str)
    # Plain print, not Rich: Rich would wrap long lines and add colour codes.
    print(text, flush=True)


# Columns people copy from (ids, names) or scan (states) are never folded; others give way.
_NO_WRAP = {"ID", "NAME", "JOB", "STATE", "STATUS", "TIME", "EVENT", "CAUSE"}


def table(title: str | None, columns: Iterable[str], rows: Iterable[Iterable[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for col in columns:
        t.add_column(col, overflow="fold", no_wrap=col in _NO_WRAP, min_width=len(col))
    for row in rows:
        t.add_row(*(v if isinstance(v, Text) else Text(shown(v)) for v in row))
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


def until(when: datetime, now: datetime | None = None) -> str:
    """``cert 23h`` / ``expired``: how long a certificate still holds."""
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return f"cert {duration(seconds)}" if seconds > 0 else "cert expired"


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


def clock(when: datetime, now: datetime | None = None) -> str:
    """A timeline's time, local: of day to the millisecond if today, else with its date."""
    local, today = when.astimezone(), (now or datetime.now(UTC)).astimezone().date()
    if local.date() == today:
        return local.strftime("%H:%M:%S.%f")[:-3]
    return local.strftime("%Y-%m-%d %H:%M:%S")


STATE_STYLE = {
    "queued": "yellow",
    "assigned": "cyan",
    "running": "blue",
    "cancelling": "magenta",
    "preempting": "magenta",
    "preempted": "magenta",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "idle": "green",
    "busy": "blue",
    "connecting": "cyan",
    "draining": "yellow",
    "paused": "yellow",
    "constrained": "yellow",
    "offline": "dim",
}


def state(value: object) -> Text:
    return Text(shown(value), style=STATE_STYLE.get(str(value), ""))


def size(n: object) -> str:
    """Bytes for a person: 512 B, 3.4 KiB, 12.0 MiB."""
    if not isinstance(n, int | float):
        return "?"
    value, units = float(n), ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.0f} B" if units[0] == "B" else f"{value:.1f} {units[0]}"
