"""The ``corral.metric {...}`` lines that ``corral.sdk.report`` prints into a job's output:
read by the coordinator (the series it stores) and by the worker (the last loss on its
/metrics), one reading for both."""

from __future__ import annotations

import json
import math

__all__ = ["MAX_NAME", "METRIC_PREFIX", "parse"]

# What corral.sdk.report prints before each line (the SDK imports nothing of Corral's, to
# stay cheap to import in a job; a test holds the two equal).
METRIC_PREFIX = "corral.metric "
MAX_NAME = 100
MAX_PER_BATCH = 10_000  # points read from one batch of output
_SKIP = frozenset({"step", "time", "ts", "job_id", "attempt"})


def parse(text: str) -> list[tuple[int | None, str, float | None]]:
    """(step, name, value) of each metric in the ``corral.metric`` lines of ``text``."""
    if METRIC_PREFIX not in text:
        return []
    found: list[tuple[int | None, str, float | None]] = []
    for line in text.splitlines():
        if not line.startswith(METRIC_PREFIX):
            continue
        try:
            doc = json.loads(line[len(METRIC_PREFIX) :])
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        step = doc.get("step")
        step = (
            step
            if isinstance(step, int) and not isinstance(step, bool) and 0 <= step < 2**62
            else None
        )
        for name, value in doc.items():
            if name in _SKIP or not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
                continue
            if value is None:
                found.append((step, name, None))
            elif isinstance(value, int | float) and not isinstance(value, bool):
                number = float(value)
                found.append((step, name, number if math.isfinite(number) else None))
            if len(found) >= MAX_PER_BATCH:
                return found
    return found
