"""Jobs, their results and their final metrics as a table: CSV, Parquet (pyarrow) or DuckDB.

One row a job: its fields, ``result`` as JSON, a ``result.<key>`` column for each top-level
number, text or boolean of its result, and a ``metric.<name>`` column for each metric's last
reported value. Columns are the union over the jobs exported; a job without one has null.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from corral.model import InvalidInput
from corral.protocol import JobView

__all__ = ["FORMATS", "rows", "write"]

FORMATS = ("csv", "parquet", "duckdb")
_BASE = ("id", "name", "kind", "state", "created_at", "started_at", "finished_at",
         "duration_s", "attempts", "worker_id", "exit_code", "error", "result")  # fmt: skip


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def rows(jobs: Iterable[JobView]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one dict a job)."""
    out: list[dict[str, Any]] = []
    extra: dict[str, None] = {}
    for j in jobs:
        took = ((j.finished_at - j.started_at).total_seconds()
                if j.started_at and j.finished_at else None)  # fmt: skip
        row: dict[str, Any] = {
            "id": j.id, "name": j.name, "kind": j.kind, "state": str(j.state),
            "created_at": j.created_at, "started_at": j.started_at,
            "finished_at": j.finished_at, "duration_s": took, "attempts": j.attempt,
            "worker_id": j.worker_id, "exit_code": j.exit_code,
            "error": (j.error or "").strip().splitlines()[-1] if j.error else None,
            "result": json.dumps(j.result) if j.result is not None else None,
        }  # fmt: skip
        for key, value in (j.result or {}).items():
            if _scalar(value):
                row[f"result.{key}"] = value
                extra.setdefault(f"result.{key}")
        for name, value in (j.final_metrics or {}).items():
            row[f"metric.{name}"] = value
            extra.setdefault(f"metric.{name}")
        out.append(row)
    columns = [*_BASE, *sorted(extra)]
    return columns, [{c: r.get(c) for c in columns} for r in out]


def _csv_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def write(fmt: str, path: Path, columns: list[str], data: list[dict[str, Any]]) -> None:
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=columns)
            w.writeheader()
            for r in data:
                w.writerow({k: _csv_value(v) for k, v in r.items()})
        return
    table = _arrow(columns, data)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
        return
    try:
        import duckdb
    except ImportError:
        raise InvalidInput("--format duckdb needs duckdb: pip install 'corral[results]'",
                           field="format") from None  # fmt: skip
    path.unlink(missing_ok=True)
    with duckdb.connect(str(path)) as db:
        db.register("exported", table)
        db.execute("CREATE TABLE jobs AS SELECT * FROM exported")


def _arrow(columns: list[str], data: list[dict[str, Any]]) -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise InvalidInput("--format parquet and duckdb need pyarrow: pip install"
                           " 'corral[results]'", field="format") from None  # fmt: skip
    arrays = {}
    for c in columns:
        values = [r[c] for r in data]
        try:
            arrays[c] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # a column of mixed types: as text
            arrays[c] = pa.array([None if v is None else str(v) for v in values])
    return pa.table(arrays)
