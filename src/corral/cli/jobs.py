"""``corral submit`` and ``corral jobs ls|show|logs|events|cancel|retry``."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.syntax import Syntax

from corral.cli import _output, _parse, _timeline
from corral.cli._api import connect, run
from corral.cli._exit import ExitCode, Failure
from corral.cli._follow import EXIT_BY_STATE, follow
from corral.cli._options import ApiKey, Json, Url
from corral.client import AsyncClient, InvalidInput, PermissionDenied, Unauthenticated
from corral.client._pack import DEFAULT_MAX_BYTES, requirements_of
from corral.model import JobState
from corral.protocol import EventList, JobList, JobMetrics, JobView, MetricSeries

app = typer.Typer(help="List, inspect, follow and cancel jobs.", no_args_is_help=True)

# The client's keyword -> the flag that sets it, so a refused value names what to fix.
_FLAG_OF = {
    "name": "--name",
    "command": "COMMAND",
    "env": "--env",
    "labels": "--label",
    "gpus": "--gpus",
    "priority": "--priority",
    "retries": "--retries",
    "timeout": "--timeout",
    "tags": "--tags",
    "cpus": "--cpus",
    "memory_gb": "--memory-gb",
    "gpu_memory_gb": "--gpu-memory-gb",
    "gpu_name": "--gpu-name",
    "accelerator": "--accelerator",
    "nodes": "--nodes",
    "target": "--target",
    "preemptible": "--preemptible",
    "workdir": "--workdir",
    "requirements": "--requirements",
    "kind": "--kind",
    "params": "--config",
    "outputs": "--output",
}


def submit(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="The command and its arguments (pytest's, for --kind test).", show_default=False
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name (default: the command).")] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="KEY=GLOB a worker's labels must match; repeatable."),
    ] = None,
    gpus: Annotated[int, typer.Option(help="GPUs the job needs.")] = 0,
    gpu_memory_gb: Annotated[
        float | None, typer.Option(help="Memory each of its GPUs must have.", show_default=False)
    ] = None,
    gpu_name: Annotated[
        str | None, typer.Option(help="GLOB its GPUs' names match ('*a100*').", show_default=False)
    ] = None,
    accelerator: Annotated[
        str | None, typer.Option(help="cpu|cuda|rocm|mps: the worker's kind.", show_default=False)
    ] = None,
    cpus: Annotated[float, typer.Option(help="Cores it holds on its worker while it runs.")] = 0,
    memory_gb: Annotated[float, typer.Option(help="Memory it holds while it runs.")] = 0,
    tags: Annotated[
        str | None,
        typer.Option(help="a,b,…: tags the worker must have (its --tags).", show_default=False),
    ] = None,
    nodes: Annotated[
        int, typer.Option(help="Workers it runs on at once, a rank each (torch.distributed).")
    ] = 1,
    target: Annotated[
        str,
        typer.Option(
            help="worker (remote only) | local (the coordinator's own) | auto (remote first)."
        ),
    ] = "auto",
    preemptible: Annotated[
        bool,
        typer.Option(
            "--preemptible",
            help="A higher priority that fits nowhere may stop it"
            " (SIGTERM, a grace to checkpoint): it runs again, no retry used.",
        ),
    ] = False,
    kind: Annotated[
        str,
        typer.Option(
            help="command (the program as given) | test (pytest with these"
            " arguments; the tests' outcomes are the result) | an installed kind"
        ),
    ] = "command",
    entry: Annotated[
        str | None,
        typer.Option(
            help="--kind train: the module:function to call with the config.", show_default=False
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="The job's parameters: a JSON file (YAML with PyYAML installed);"
            " a train job's function is called with them.",
            show_default=False,
        ),
    ] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(
            help="A directory (. typical) packed and unpacked where the job runs, without"
            " what .gitignore and .corralignore leave out.",
            show_default=False,
        ),
    ] = None,
    workdir_max_mb: Annotated[
        float, typer.Option(help="The most --workdir may hold, in MiB.", min=0.001)
    ] = DEFAULT_MAX_BYTES / 2**20,
    requirements: Annotated[
        Path | None,
        typer.Option(
            help="A requirements file: the job runs in a Python environment with"
            " them, built once per worker.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        list[str] | None,
        typer.Option(
            "--output",
            help="GLOB of files in its directory ('model/*.pt') stored"
            " when it succeeds (corral artifacts get); repeatable.",
        ),
    ] = None,
    pip: Annotated[
        list[str] | None,
        typer.Option("--pip", help="A package for its environment ('pkg==1.2'); repeatable."),
    ] = None,
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
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Queue a command job: corral submit [OPTIONS] -- CMD ARGS...

    With --wait: 0 succeeded, 1 failed, 3 cancelled.
    """
    if kind == "train":
        if entry is None or command:
            raise Failure("--kind train: name its function with --entry module:function"
                          " (and no command)")  # fmt: skip
        command = [entry]
    elif entry is not None:
        raise Failure("--entry: only for --kind train")
    elif not command and kind == "command":
        raise Failure("give the command after --: corral submit [OPTIONS] -- CMD ARGS...")
    params = _parse.config_file(config) if config is not None else None
    labels = _parse.pairs(label or [], flag="--label", what="KEY=GLOB")
    variables = _parse.env(env or [])
    tag_list = [t.strip() for t in tags.split(",") if t.strip()] if tags else []

    async def go() -> int:
        async with connect(url, api_key) as client:
            try:
                package = None
                if workdir is not None:
                    package = await client.upload_workdir(
                        workdir, max_bytes=int(workdir_max_mb * 2**20)
                    )
                wanted = [*(requirements_of(requirements) if requirements else []), *(pip or [])]
                job = await client.submit(
                    command or [], name=name, env=variables, labels=labels, gpus=gpus,
                    priority=priority, retries=retries, timeout=timeout, tags=tag_list,
                    cpus=cpus, memory_gb=memory_gb, gpu_memory_gb=gpu_memory_gb,
                    gpu_name=gpu_name, accelerator=accelerator, nodes=nodes, target=target,
                    preemptible=preemptible, package=package, requirements=wanted,
                    kind=kind, params=params, outputs=output,
                )  # fmt: skip
            except InvalidInput as exc:
                if exc.body or exc.field not in _FLAG_OF:
                    raise  # the coordinator's refusal: said as it said it
                message = exc.detail.removeprefix(f"{exc.field}: ")
                raise Failure(f"{_FLAG_OF[exc.field]}: {message}") from None
            if not wait:
                if as_json:
                    _output.print_json(job)
                else:
                    _output.out.print(
                        _output.line(job.id, "  ", _output.state(job.state), "  ", job.name)
                    )
                return 0
            if not as_json:
                _output.err.print(
                    _output.line(f"submitted {job.id} (", job.name, "); following its output")
                )
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

    raise typer.Exit(run(go()))


def _report_end(job: JobView, as_json: bool) -> None:
    if as_json:
        _output.print_json(job)
        return
    took = _output.duration(_output.elapsed(job.started_at, job.finished_at))
    text = _output.line(f"job {job.id} ", _output.state(job.state), f" after {took}")
    if job.exit_code not in (None, 0):
        text.append(f" (exit code {job.exit_code})")
    if job.error and job.state != JobState.SUCCEEDED:
        text.append_text(_output.line(": ", job.error.strip().splitlines()[-1]))
    _output.err.print(text)


@app.command("ls")
def ls(
    state: Annotated[
        JobState | None, typer.Option(help="Only jobs in this state.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 50,
    name: Annotated[
        str | None, typer.Option(help="Only jobs whose name holds this.", show_default=False)
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            help="Only jobs that ask for this worker label, KEY=VALUE; repeat.",
            show_default=False,
        ),
    ] = None,
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """List jobs, newest first."""
    labels = _parse.pairs(label or [], flag="--label")

    async def go() -> None:
        async with connect(url, api_key) as client:
            # One more than shown, to know whether to say there are more.
            jobs = [j async for j in client.jobs(state=state, limit=limit + 1, name=name,
                                                 labels=labels)]  # fmt: skip
        more, jobs = len(jobs) > limit, jobs[:limit]
        if as_json:
            _output.print_json(JobList(jobs=jobs))
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
            for j in jobs
        ]
        cols = ("ID", "NAME", "STATE", "ATTEMPT", "WORKER", "CREATED", "RAN")
        _output.out.print(_output.table(None, cols, rows))
        if more:
            _output.err.print(f"more: corral jobs ls --limit {limit * 2}", soft_wrap=True)

    run(go())


@app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Show one job: its spec, state, attempts and result."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            job = await client.job(job_id)
        if as_json:
            _output.print_json(job)
            return
        _output.out.print(_details(job))

    run(go())


def _call(job: JobView) -> str:
    """What a call job runs: its function and how many arguments it is given."""
    assert job.call is not None
    fn = job.call.target or "a pickled function"
    n = len(job.call.args) + len(job.call.kwargs)
    return f"{fn} with {n} argument{'s' * (n != 1)}"


def _needs(job: JobView) -> str:
    """What it asks of its worker, in a line: "2 GPUs (a100*, ≥ 40 GB each), 4 cpus"."""
    parts = []
    if job.gpus:
        each = [x for x in (job.gpu_name, f"≥ {job.gpu_memory_gb:g} GB each"
                            if job.gpu_memory_gb else None) if x]  # fmt: skip
        parts.append(f"{job.gpus} GPU{'s' * (job.gpus != 1)}" + (f" ({', '.join(each)})"
                                                                 if each else ""))  # fmt: skip
    if job.accelerator:
        parts.append(job.accelerator)
    if job.target != "auto":
        parts.append(f"target {job.target}")
    if job.cpus:
        parts.append(f"{job.cpus:g} cpus")
    if job.memory_gb:
        parts.append(f"{job.memory_gb:g} GB memory")
    if job.tags:
        parts.append("tags " + ",".join(job.tags))
    return ", ".join(parts) or "-"


def _details(job: JobView) -> Group:
    rows = [
        ("id", job.id),
        ("name", job.name),
        ("state", _output.state(job.state)),
        ("call", _call(job)) if job.call is not None else ("command", " ".join(job.command)),
        ("kind", job.kind),
        ("labels", ", ".join(f"{k}={v}" for k, v in job.worker_labels.items()) or "-"),
        ("needs", _needs(job)),
        *(
            [("gang", f"rank {job.rank} of {job.nodes}: " + " ".join(job.members or []))]
            if job.gang_id
            else []
        ),
        ("priority", job.priority),
        (
            "attempt",
            f"{job.attempt} (retries allowed: {job.max_retries}"
            + (f"; preempted {job.preemptions} times" if job.preemptions else "")
            + (", preemptible)" if job.preemptible else ")"),
        ),
        ("timeout", _output.duration(job.timeout_s)),
        ("workdir", f"package {job.workdir[:12]}" if job.workdir else "-"),
        ("requirements", ", ".join(job.requirements) if job.requirements else "-"),
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
                ",".join(map(str, a.gpu_ids)) or "-",
                _output.state(a.outcome or "running"),
                _output.duration(_output.elapsed(a.started_at, a.finished_at)),
                "-" if a.exit_code is None else a.exit_code,
                (a.error or "").strip().splitlines()[-1][:80] if a.error else "",
            )
            for a in job.attempts
        ]
        cols = ("ATTEMPT", "WORKER", "GPUS", "OUTCOME", "RAN", "EXIT", "WHY")
        parts.append(_output.table("attempts", cols, attempt_rows))
    if job.error:
        parts.append(_output.line(_output.styled("error:", "red"), " ", job.error, newlines=True))
    if job.kind == "test" and job.result is not None and "passed" in job.result:
        r = job.result
        counts = ", ".join(f"{r.get(k, 0)} {k}" for k in ("passed", "failed", "skipped", "errors"))
        parts.append(_output.line(_output.styled("tests:", "bold"), " ", counts))
        failed = [t for t in r.get("tests", []) if t.get("outcome") in ("failed", "error")]
        for t in failed[:20]:
            parts.append(_output.line("  ", _output.styled(t["outcome"], "red"), " ", t["id"],
                                      f": {t['message']}" if t.get("message") else ""))  # fmt: skip
    if job.result is not None:
        # JSON escapes every control character itself.
        parts.append(Syntax(json.dumps(job.result, indent=2), "json", background_color="default"))
    return Group(*parts)


@app.command("metrics")
def metrics(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    name: Annotated[
        list[str] | None, typer.Option("--name", "-n", help="Only this metric; repeatable.")
    ] = None,
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """What its code reported (corral.sdk.report): each metric's points, last, min and max."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            found = await client.metrics(job_id, name or ())
        if as_json:
            _output.print_json(JobMetrics(job_id=job_id, series=[
                MetricSeries(name=n, points=p) for n, p in found.items()]))  # fmt: skip
            return
        rows = []
        for metric, points in found.items():
            values = [p.value for p in points if p.value is not None]
            steps = [p.step for p in points if p.step is not None]
            rows.append((metric, len(points),
                         f"{min(steps)}..{max(steps)}" if steps else "-",
                         _number(points[-1].value), _number(min(values, default=None)),
                         _number(max(values, default=None))))  # fmt: skip
        cols = ("METRIC", "POINTS", "STEPS", "LAST", "MIN", "MAX")
        _output.out.print(_output.table(None, cols, rows))

    run(go())


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


@app.command("why")
def why(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Why a queued job is not running, and what each worker lacks or is doing."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            answer = await client.why(job_id)
        if as_json:
            _output.print_json(answer)
            return
        for reason in answer.reasons:
            _output.out.print(_output.line(reason))
        if answer.workers:
            rows = [(v.name, v.worker_id, v.verdict) for v in answer.workers]
            _output.out.print(_output.table(None, ("WORKER", "ID", "VERDICT"), rows))

    run(go())


@app.command("logs")
def logs(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
    ] = False,
    rank: Annotated[
        int | None,
        typer.Option(
            help="Of a gang, this member's alone (default: all, each line after its"
            " rank; -f: rank 0's).",
            min=0,
            show_default=False,
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Print a job's output (all attempts); -f follows it live."""

    async def go() -> None:
        nonlocal job_id
        async with connect(url, api_key) as client:
            if rank is not None:
                members = (await client.job(job_id)).members or [job_id]
                if rank >= len(members):
                    raise Failure(f"--rank: {job_id} has {len(members)} member(s)")
                job_id = members[rank]
            if follow_:
                await follow(client, job_id, echo=True, status=False)
                return
            async for line in client.logs(job_id):
                sys.stdout.write(line + "\n")
            sys.stdout.flush()

    run(go())


@app.command("events")
def events(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """The job's timeline: each change of state and why.

    CAUSE names the request, reaper tick or dispatch round that made the change; the
    coordinator's log lines carry the same id."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            timeline = [e async for e in client.events(job_id)]
            names = await worker_names(client) if not as_json else {}
        if as_json:
            _output.print_json(EventList(events=timeline))
            return
        _output.out.print(_timeline.table(timeline, names))

    run(go())


async def worker_names(client: AsyncClient) -> dict[str, str]:
    """Worker id -> name, to show names; only an admin may list workers, others see ids."""
    try:
        return {w.id: w.name for w in await client.workers()}
    except (PermissionDenied, Unauthenticated):
        return {}


@app.command("retry")
def retry(
    job_ids: Annotated[list[str], typer.Argument(help="Ids of ended jobs.")],
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Run ended jobs again: each a new job with the same request (its history names the
    job it retries)."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            for job_id in job_ids:
                job = await client.retry(job_id)
                _output.out.print(_output.line(job_id, " → ", job.id, "  ",
                                               _output.state(job.state)))  # fmt: skip

    run(go())


@app.command("cancel")
def cancel(
    job_ids: Annotated[list[str], typer.Argument(help="Job ids.")],
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Cancel jobs: a queued job ends at once; a running one is stopped on its worker."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            for job_id in job_ids:
                job = await client.cancel(job_id)
                _output.out.print(_output.line(job.id, "  ", _output.state(job.state)))

    run(go())
