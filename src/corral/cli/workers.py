"""``corral workers ls|create|drain|rotate-token|rm``: the fleet, for admins."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from corral.cli import _output, _parse
from corral.cli._client import DEFAULT_URL, Client, run
from corral.cli._options import ApiKey, Json, Url
from corral.model import WorkerType
from corral.protocol import WorkerCreate, WorkerCreated

app = typer.Typer(help="Manage workers and their tokens (admin).", no_args_is_help=True)

WorkerRef = Annotated[str, typer.Argument(help="Worker id or name.")]


@app.command("ls")
def ls(as_json: Json = False, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """List workers: status, resources, what they run."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            listing = await client.workers()
        if as_json:
            _output.print_json(listing)
            return
        rows = [
            (
                w.name,
                w.id,
                _output.state(w.status),
                w.worker_type,
                f"{w.running}/{w.slots}",
                w.gpu_count,
                ", ".join(f"{k}={v}" for k, v in w.labels.items()) or "-",
                _output.ago(w.last_heartbeat),
            )
            for w in listing.workers
        ]
        cols = ("NAME", "ID", "STATUS", "TYPE", "JOBS", "GPUS", "LABELS", "SEEN")
        _output.out.print(_output.table(None, cols, rows))

    run(url, go())


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Worker name, unique in the fleet.")],
    persistent: Annotated[
        bool, typer.Option("--persistent", help="Stays between jobs (default: one job, then exit).")
    ] = False,
    labels: Annotated[
        str | None, typer.Option(help="k=v,… the scheduler matches jobs against.")
    ] = None,
    as_json: Json = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Create a worker and print its token (shown once)."""
    spec = WorkerCreate(
        name=name,
        worker_type=WorkerType.PERSISTENT if persistent else WorkerType.EPHEMERAL,
        labels=_parse.labels(labels),
    )

    async def go() -> None:
        async with Client(url, api_key) as client:
            created = await client.create_worker(spec)
        _print_token(created, url, as_json, persistent=persistent)

    run(url, go())


@app.command("drain")
def drain(ref: WorkerRef, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Let a worker finish what it runs and take nothing new. An ephemeral worker then
    exits; a persistent one stays connected, draining, until its process is stopped
    (SIGTERM): then it is offline and 'corral workers rm' removes it."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            worker = await client.find_worker(ref)
            await client.drain_worker(worker.id)
        _output.out.print(f"{worker.name} ({worker.id}): draining")
        if worker.worker_type == WorkerType.PERSISTENT:
            _output.err.print(
                "a persistent worker stays connected, taking nothing, until its process is"
                " stopped (SIGTERM); then 'corral workers rm' removes it",
                soft_wrap=True,
                markup=False,
            )

    run(url, go())


@app.command("rotate-token")
def rotate_token(
    ref: WorkerRef, as_json: Json = False, url: Url = DEFAULT_URL, api_key: ApiKey = None
) -> None:
    """Issue a new token for a worker; the old one stops working."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            worker = await client.find_worker(ref)
            created = await client.rotate_token(worker.id)
        _print_token(created, url, as_json, persistent=worker.worker_type == WorkerType.PERSISTENT)

    run(url, go())


@app.command("rm")
def rm(ref: WorkerRef, url: Url = DEFAULT_URL, api_key: ApiKey = None) -> None:
    """Delete an offline worker and its token (drain it, and stop a persistent one's
    process, first)."""

    async def go() -> None:
        async with Client(url, api_key) as client:
            worker = await client.find_worker(ref)
            await client.delete_worker(worker.id)
        _output.out.print(f"{worker.name} ({worker.id}): removed")

    run(url, go())


def _print_token(created: WorkerCreated, url: str, as_json: bool, *, persistent: bool) -> None:
    if as_json:
        _output.print_json(created)
        return
    _output.out.print(f"worker [bold]{created.name}[/] ({created.id})")
    _output.out.print(f"token (shown once): [bold]{created.token}[/]", soft_wrap=True)
    flag = " --persistent" if persistent else ""
    # The token goes in the worker's environment, never on its command line: argv is visible
    # to every user of the host (ps, /proc/<pid>/cmdline).
    _output.err.print(
        "start it with (the token in the environment: a command line is visible to every user"
        " of the host):\n"
        f"  CORRAL_WORKER_TOKEN={shlex.quote(created.token)} corral worker"
        f" --orchestrator-url {shlex.quote(url)} --name {shlex.quote(created.name)}{flag}",
        soft_wrap=True,
        markup=False,
    )
