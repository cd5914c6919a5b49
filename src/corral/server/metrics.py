"""A job's metrics, as its code reported them: ``corral.sdk.report(step=…, loss=…)`` prints
one ``corral.metric {...}`` line, which reaches the coordinator with the job's output; each
batch of output that is stored is read for those lines here, in the same transaction, so a
batch sent twice stores its metrics once too. The worker sends output in whole lines.

A point is kept for each numeric value (a NaN or infinity, which the SDK sends as null, as
None); text and nested values are left in the log. A job stores at most
``metric_points_max`` points; past it, what it reports is in its log only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from corral.protocol import JobMetrics, MetricPoint, MetricSeries
from corral.protocol.metric_lines import parse
from corral.store import as_utc
from corral.store import metrics as metrics_q

__all__ = ["page", "store"]


async def store(
    conn: Any, *, job_id: str, tenant_id: str, attempt: int, text: str, now: datetime, cap: int
) -> int:
    points = parse(text)
    if not points:
        return 0
    rows = [{"tenant_id": tenant_id, "attempt": attempt, "step": step, "name": name,
             "value": value, "at": now} for step, name, value in points]  # fmt: skip
    return await metrics_q.add(conn, job_id, rows, cap=cap)


def page(job_id: str, rows: list[Any], limit: int) -> JobMetrics:
    by_name: dict[str, list[MetricPoint]] = {}
    for r in rows:
        point = MetricPoint(step=r["step"], value=r["value"], attempt=r["attempt"],
                            at=as_utc(r["at"]))  # fmt: skip
        by_name.setdefault(r["name"], []).append(point)
    cursor = str(rows[-1]["id"]) if len(rows) == limit else None
    series = [MetricSeries(name=n, points=p) for n, p in by_name.items()]
    return JobMetrics(job_id=job_id, series=series, next_cursor=cursor)
