"""``corral workers ls|create|enrol|drain|pause|resume|rotate-token|rm|events``: the fleet,
for admins."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from corral.cli import _output, _parse, _timeline
from corral.cli._api import connect, run
from corral.cli._options import ApiKey, Json, Url
from corral.model import WorkerType
from corral.protocol import EventList, WorkerCreated, WorkerList, WorkerView

app = typer.Typer(help="Manage workers and their tokens (admin).", no_args_is_help=True)

WorkerRef = Annotated[str, typer.Argument(help="Worker id or name.")]
# What an admin says a worker is, whether it gets a token or enrols (create, enrol).
Persistent = Annotated[
    bool, typer.Option("--persistent", help="Stays between jobs (default: one job, then exit).")
]
Labels = Annotated[
    str | None,
    typer.Option(help="k=v,… the scheduler matches jobs against; the worker cannot change them."),
]
AllowLabels = Annotated[
    list[str] | None,
    typer.Option("--allow-label", help="A label key (glob) the worker may set itself; repeat."),
]


@app.command("ls")
def ls(as_json: Json = False, url: Url = None, api_key: ApiKey = None) -> None:
    """List workers: status, resources, what they run."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            workers = await client.workers()
        if as_json:
            _output.print_json(WorkerList(workers=workers))
            return
        rows = [
            (
                w.name,
                w.id,
                _output.state(w.status),
                f"{w.worker_type}{' (local)' if w.local else ''}{' (shared)' if w.shared else ''}",
                f"{w.running}/{w.slots}",
                _gpus(w),
                ", ".join(f"{k}={v}" if v else k for k, v in w.labels.items()) or "-",
                _output.ago(w.last_heartbeat),
                _output.until(w.cert_expires_at) if w.cert_expires_at else "token",
            )
            for w in workers
        ]
        cols = ("NAME", "ID", "STATUS", "TYPE", "JOBS", "GPUS", "LABELS", "SEEN", "CREDENTIAL")
        _output.out.print(_output.table(None, cols, rows))

    run(go())


def _gpus(w: WorkerView) -> str:
    """In use of owned, and what they are: "1/2 cuda (NVIDIA A100 80GB)"."""
    if not w.gpus:
        return "-" if w.accelerator == "cpu" else w.accelerator
    names = sorted({g.name for g in w.gpus})
    return f"{len(w.gpus_in_use)}/{w.gpu_count} {w.accelerator} ({', '.join(names)})"


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Worker name, unique in the fleet.")],
    persistent: Persistent = False,
    labels: Labels = None,
    allow_label: AllowLabels = None,
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="The coordinator's own: jobs of --target local run"
            " only on such workers, --target auto ones last.",
        ),
    ] = False,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared",
            help="(operator) It runs every tenant's jobs: the shared"
            " pool, fair share between tenants.",
        ),
    ] = False,
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Create a worker and print its token (shown once)."""
    parsed = _parse.labels(labels)

    async def go() -> None:
        async with connect(url, api_key) as client:
            created = await client.create_worker(name, persistent=persistent, labels=parsed,
                                                 allow_labels=allow_label or [],
                                                 local=local, shared=shared)  # fmt: skip
        _print_token(created, client.url, as_json, persistent=persistent)

    run(go())


@app.command("enrol")
def enrol(
    name: Annotated[str, typer.Argument(help="Worker name, unique in the fleet.")],
    persistent: Persistent = False,
    labels: Labels = None,
    allow_label: AllowLabels = None,
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Print a single-use registration token for a worker that enrols with a certificate:
    it makes its own key, which never leaves its machine. A worker of that name that exists
    is taken over when it enrols (its old credentials stop)."""
    parsed = _parse.labels(labels)

    async def go() -> None:
        async with connect(url, api_key) as client:
            issued = await client.registration(name, persistent=persistent, labels=parsed,
                                               allow_labels=allow_label or [])  # fmt: skip
        if as_json:
            _output.print_json(issued)
            return
        until = f": registration token, single use, until {issued.expires_at:%H:%M:%S} UTC:"
        _output.out.print(_output.line("worker ", _output.styled(issued.name, "bold"), until),
                          soft_wrap=True)  # fmt: skip
        _output.out.print(_output.line(_output.styled(issued.token, "bold")), soft_wrap=True)
        flag = " --persistent" if persistent else ""
        _output.err.print("start it with (in the environment: a command line is visible to"
                          " every user of the host):", soft_wrap=True, markup=False)  # fmt: skip
        _output.err.print(_output.line(
            f"  CORRAL_WORKER__REGISTRATION_TOKEN={shlex.quote(issued.token)} corral worker"
            f" --orchestrator-url {shlex.quote(client.url)} --name {shlex.quote(issued.name)}{flag}"
        ), soft_wrap=True)  # fmt: skip

    run(go())


@app.command("pause")
def pause(ref: WorkerRef, url: Url = None, api_key: ApiKey = None) -> None:
    """Give a worker no new work until it is resumed; what it runs goes on."""
    _pause(ref, url, api_key, paused=True)


@app.command("resume")
def resume(ref: WorkerRef, url: Url = None, api_key: ApiKey = None) -> None:
    """Let a paused worker take new work again."""
    _pause(ref, url, api_key, paused=False)


def _pause(ref: str, url: str | None, api_key: str | None, *, paused: bool) -> None:
    async def go() -> None:
        async with connect(url, api_key) as client:
            worker = await client.pause_worker(ref, paused=paused)
        said = "paused" if worker.paused else "resumed"
        _output.out.print(_output.line(worker.name, f" ({worker.id}): {said}, ",
                                       _output.state(worker.status)))  # fmt: skip

    run(go())


@app.command("drain")
def drain(ref: WorkerRef, url: Url = None, api_key: ApiKey = None) -> None:
    """Let a worker finish what it runs and take nothing new. An ephemeral worker then
    exits; a persistent one stays connected, draining, until its process is stopped
    (SIGTERM): then it is offline and 'corral workers rm' removes it."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            worker = await client.drain_worker(ref)
        _output.out.print(_output.line(worker.name, f" ({worker.id}): draining"))
        if worker.worker_type == WorkerType.PERSISTENT:
            _output.err.print(
                "a persistent worker stays connected, taking nothing, until its process is"
                " stopped (SIGTERM); then 'corral workers rm' removes it",
                soft_wrap=True,
                markup=False,
            )

    run(go())


@app.command("rotate-token")
def rotate_token(
    ref: WorkerRef, as_json: Json = False, url: Url = None, api_key: ApiKey = None
) -> None:
    """Issue a new token for a worker; the old one stops working."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            worker = await client.worker(ref)
            created = await client.rotate_token(worker.id)
        persistent = worker.worker_type == WorkerType.PERSISTENT
        _print_token(created, client.url, as_json, persistent=persistent)

    run(go())


@app.command("rm")
def rm(ref: WorkerRef, url: Url = None, api_key: ApiKey = None) -> None:
    """Delete an offline worker and its token (drain it, and stop a persistent one's
    process, first)."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            worker = await client.remove_worker(ref)
        _output.out.print(_output.line(worker.name, f" ({worker.id}): removed"))

    run(go())


@app.command("events")
def events(ref: WorkerRef, as_json: Json = False, url: Url = None, api_key: ApiKey = None) -> None:
    """The worker's timeline: created, registered, connected, offline and why…

    Also: the address and capabilities it registered with, draining, token rotated,
    removed."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            timeline = [e async for e in client.worker_events(ref)]
            names = {} if as_json else {w.id: w.name for w in await client.workers()}
        if as_json:
            _output.print_json(EventList(events=timeline))
            return
        _output.out.print(_timeline.table(timeline, names))

    run(go())


def _print_token(created: WorkerCreated, url: str, as_json: bool, *, persistent: bool) -> None:
    if as_json:
        _output.print_json(created)
        return
    name = _output.styled(created.name, "bold")
    _output.out.print(_output.line("worker ", name, f" ({created.id})"))
    _output.out.print(
        _output.line("token (shown once): ", _output.styled(created.token, "bold")), soft_wrap=True
    )
    flag = " --persistent" if persistent else ""
    # The token goes in the worker's environment, never on its command line: argv is visible
    # to every user of the host (ps, /proc/<pid>/cmdline).
    _output.err.print(
        "start it with (the token in the environment: a command line is visible to every user"
        " of the host):",
        soft_wrap=True,
        markup=False,
    )
    _output.err.print(
        _output.line(
            f"  CORRAL_WORKER__TOKEN={shlex.quote(created.token)} corral worker"
            f" --orchestrator-url {shlex.quote(url)} --name {shlex.quote(created.name)}{flag}"
        ),
        soft_wrap=True,
    )
