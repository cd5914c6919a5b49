"""The garbage collector's thresholds for a process that runs a coordinator.

CPython collects its youngest generation every 700 net allocations of container objects
and the whole heap after ten collections of the middle one, when a quarter more objects
have survived into the oldest since the last. A coordinator serving a fleet allocates
fast (rows, models, frames of a request in flight) and holds a large heap (a stream's task
and generator per connected worker): with 2,000 workers the default thresholds ran 141
whole-heap collections in two minutes, 23 s of CPU, up to 0.86 s each with the loop
stopped, and almost none of them freed anything (docs/PERFORMANCE.md). A youngest
generation of 20,000 lets a request's objects die by reference count before any
collection sees them, so few survive to be promoted and the whole heap is rarely walked.
Reference cycles are still collected; they wait longer."""

from __future__ import annotations

import gc

YOUNGEST = 20_000


def tune_for_a_server() -> None:
    """Raise the youngest generation's threshold; the older two keep CPython's defaults."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST, middle, oldest)
