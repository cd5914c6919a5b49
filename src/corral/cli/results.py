"""``corral results export``: jobs, their results and final metrics, as a file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from corral.cli import _output, _parse
from corral.cli._api import connect, run
from corral.cli._exit import Failure
from corral.cli._options import ApiKey, Url
from corral.client._export import FORMATS, rows, write
from corral.protocol import JobView

app = typer.Typer(help="Jobs' results and metrics, as files.", no_args_is_help=True)


@app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="csv | parquet | duckdb.")] = "csv",
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File to write (default: results.<format>).", show_default=False
        ),
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Only jobs of this kind (test, train…).", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only jobs created within this span (2h, 7d).", show_default=False),
    ] = None,
    state: Annotated[
        list[str] | None, typer.Option(help="Only jobs in this state; repeatable.")
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """One row a job: its fields, its result, and each metric's last value (metric.<name>)."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"one of {', '.join(FORMATS)}", param_hint="--format")
    after = (datetime.now(UTC) - timedelta(seconds=_parse.span(since, flag="--since"))
             if since else None)  # fmt: skip
    path = output or Path(f"results.{'duckdb' if fmt == 'duckdb' else fmt}")
    if not path.parent.is_dir():
        raise Failure(f"--output: no directory {path.parent}")

    async def go() -> None:
        found: list[JobView] = []
        async with connect(url, api_key) as client:
            async for job in client.jobs(state or None, final_metrics=True):
                if after is not None and job.created_at < after:
                    break  # newest first: the rest are older
                if kind is None or job.kind == kind:
                    found.append(job)
        columns, data = rows(found)
        write(fmt, path, columns, data)
        _output.err.print(f"{len(data)} jobs, {len(columns)} columns -> {path}",
                          markup=False, soft_wrap=True)  # fmt: skip

    run(go())
