"""``corral submit`` and ``corral jobs ls|show|logs|cancel``."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Group
from rich.syntax import Syntax

from corral.cli import _output, _parse
from corral.cli._client import DEFAULT_URL, Client, run
from corral.cli._exit import ExitCode, Failure
from corral.cli._follow import EXIT_BY_STATE, follow
from corral.cli._options import ApiKey, Json, Url
from corral.model import JobState
from corral.protocol import JobSubmit, JobView

app = typer.Typer(help="List, inspect, follow and cancel jobs.", no_args_is_help=True)

# JobSubmit field -> the flag that sets it, so a validation error names what to fix.
_FLAG_OF = {
    "name": "--name",
    "command": "COMMAND",
    "env": "--env",
    "worker_labels": "--label",
    "gpus": "--gpus",
    "priority": "--priority",
    "max_retries": "--retries",
    "timeout_s": "--timeout",
}


def submit(
    command: Annotated[list[str], typer.Argument(help="The command and its arguments.")],
    name: Annotated[str | None, typer.Option(help="Job name (default: the command).")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="KEY=GLOB a worker's labels must match; repeatable."),
    ] = None,
    gpus: Annotated[int, typer.Option(help="GPUs the job needs.")] = 0,
    priority: Annotated[int, typer.Option(help="Higher runs first (-1000..1000).")] = 0,
    retries: Annotated[int, typer.Option(help="Retries when an attempt is lost or times out.")] = 3,
    timeout: Annotated[
        float | None, typer.Option(help="Seconds an attempt may run.", show_default=False)
    ] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", "-e", help="NAME=VALUE for the job; repeatable.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Follow the job; exit with its outcome.")
    ] = False,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Queue a command job: corral submit [OPTIONS] -- CMD ARGS...

    With --wait: 0 succeeded, 1 failed, 3 cancelled.
    """
    fields: dict[str, Any] = {
        "command": command,
        "worker_labels": _parse.pairs(label or [], flag="--label", what="KEY=GLOB"),
        "env": _parse.env(env or []),
        "gpus": gpus,
        "priority": priority,
        "max_retries": retries,
    }
    if name is not None:
        fields["name"] = name
    if timeout is not None:
        fields["timeout_s"] = timeout
    spec = _validate(fields)

    async def go() -> int:
        async with Client(url, api_key) as client:
            job = await client.submit(spec)
            if not wait:
                if as_json:
                    _output.print_json(job)
                else:
                    _output.out.print(f"{job.id}  {_output.state(job.state)}  {job.name}")
                return 0
            if not as_json:
                _output.err.print(f"submitted {job.id} ({job.name}); following its output")
            try:
                final = await follow(client, job.id, echo=not as_json, status=not as_json)
            except asyncio.CancelledError:  # Ctrl-C stops the waiting, not the job
                _output.err.print(
                    f"{job.id} keeps running; stop it with: corral jobs cancel {job.id}",
                    markup=False,
                    soft_wrap=True,
                )
                raise
            _report_end(final, as_json)
            return int(EXIT_BY_STATE.get(final.state, ExitCode.JOB_FAILED))

    raise typer.Exit(run(url, go()))


def _validate(fields: dict[str, Any]) -> JobSubmit:
    try:
        return JobSubmit.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise Failure(f"{_FLAG_OF.get(field, field)}: {first['msg']}") from None


def _report_end(job: JobView, as_json: bool) -> None:
    if as_json:
        _output.print_json(job)
        return
    took = _output.duration(_output.elapsed(job.started_at, job.finished_at))
    line = f"job {job.id} {_output.state(job.state)} after {took}"
    if job.exit_code not in (None, 0):
        line += f" (exit code {job.exit_code})"
    if job.error and job.state != JobState.SUCCEEDED:
        line += f": {job.error.strip().splitlines()[-1]}"
    _output.err.print(line)


@app.command("ls")
def ls(
    state: Annotated[
        JobState | None, typer.Option(help="Only jobs in this state.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Continue from a previous page.", show_default=False)
    ] = None,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List jobs, newest first."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            page = await client.jobs(state=state, limit=limit, cursor=cursor)
        if as_json:
            _output.print_json(page)
            return
        rows = [
            (
                j.id,
                j.name,
                _output.state(j.state),
                j.attempt,
                j.worker_id or "-",
                _output.ago(j.created_at),
                _output.duration(_output.elapsed(j.started_at, j.finished_at)),
            )
            for j in page.jobs
        ]
        cols = ("ID", "NAME", "STATE", "ATTEMPT", "WORKER", "CREATED", "RAN")
        _output.out.print(_output.table(None, cols, rows))
        if page.next_cursor:
            _output.err.print(f"more: corral jobs ls --cursor {page.next_cursor}", soft_wrap=True)

    run(url, go())


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Show one job: its spec, state, attempts and result."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            job = await client.job(job_id)
        if as_json:
            _output.print_json(job)
            return
        rows = [
            ("id", job.id),
            ("name", job.name),
            ("state", _output.state(job.state)),
            ("command", " ".join(job.command)),
            ("kind", job.kind),
            ("labels", ", ".join(f"{k}={v}" for k, v in job.worker_labels.items()) or "-"),
            ("gpus", job.gpus),
            ("priority", job.priority),
            ("attempt", f"{job.attempt} (retries allowed: {job.max_retries})"),
            ("timeout", _output.duration(job.timeout_s)),
            ("worker", job.worker_id or "-"),
            ("created", job.created_at.isoformat()),
            ("started", job.started_at.isoformat() if job.started_at else "-"),
            ("finished", job.finished_at.isoformat() if job.finished_at else "-"),
            ("ran", _output.duration(_output.elapsed(job.started_at, job.finished_at))),
            ("exit code", "-" if job.exit_code is None else job.exit_code),
        ]
        t = _output.table(None, ("FIELD", "VALUE"), rows)
        t.show_header = False
        parts: list[Any] = [t]
        if job.attempts:
            attempt_rows = [
                (
                    a.number,
                    a.worker_id or "-",
                    _output.state(a.outcome or "running"),
                    _output.duration(_output.elapsed(a.started_at, a.finished_at)),
                    "-" if a.exit_code is None else a.exit_code,
                    (a.error or "").strip().splitlines()[-1][:80] if a.error else "",
                )
                for a in job.attempts
            ]
            cols = ("ATTEMPT", "WORKER", "OUTCOME", "RAN", "EXIT", "WHY")
            parts.append(_output.table("attempts", cols, attempt_rows))
        if job.error:
            parts.append(f"[red]error:[/] {job.error}")
        if job.result is not None:
            parts.append(
                Syntax(json.dumps(job.result, indent=2), "json", background_color="default")
            )
        _output.out.print(Group(*parts))

    run(url, go())


@app.command("logs")
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Print a job's output (all attempts); -f follows it live."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            if follow_:
                await follow(client, job_id, echo=True, status=False)
            else:
                sys.stdout.write(await client.logs(job_id))
                sys.stdout.flush()

    run(url, go())


@app.command("cancel")
def cancel(
    job_ids: Annotated[list[str], typer.Argument(help="Job ids.")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel jobs: a queued job ends at once; a running one is stopped on its worker."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            for job_id in job_ids:
                job = await client.cancel(job_id)
                _output.out.print(f"{job.id}  {_output.state(job.state)}")

    run(url, go())
