"""``corral up``: a coordinator and local workers in one process tree; ``--demo`` runs the
digits sweep on them and exits."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli import _gc, _logging, _output
from corral.cli._api import run
from corral.cli._demo import run_demo
from corral.cli._exit import ExitCode, Failure
from corral.config import harden
from corral.local import LocalFleet


def up(
    workers: Annotated[int, typer.Option(min=1, max=64, help="Local workers to start.")] = 2,
    data_dir: Annotated[Path, typer.Option(help="Store, worker state and logs live here.")] = Path(
        ".corral"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="Coordinator port.")] = 8001,
    host: Annotated[str, typer.Option(help="Coordinator address.")] = "127.0.0.1",
    demo: Annotated[
        bool, typer.Option("--demo", help="Run the digits training sweep, print results, exit.")
    ] = False,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs per demo job.")] = 10,
    log_level: _logging.LogLevel = _logging.Level.WARNING,
) -> None:
    """Start a coordinator and local workers; Ctrl-C stops all of it."""
    # The coordinator logs here, beside what `up` prints; each worker logs to its own file.
    _logging.configure(log_level)
    if demo and importlib.util.find_spec("sklearn") is None:
        raise Failure("--demo trains with scikit-learn: pip install 'corral[examples]'")
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        admin_key = _admin_key(data_dir)
    except OSError as exc:  # a file where the directory should be, no permission…
        raise Failure(f"cannot use --data-dir {data_dir}: {exc.strerror or exc}") from None
    # This process holds the operator's key: the jobs of the fleet it starts run as its user.
    harden.hide_secrets(harden.BOOTSTRAP_KEY_ENVS)
    fleet = LocalFleet(
        data_dir=data_dir,
        workers=workers,
        host=host,
        port=port,
        admin_key=admin_key,
    )
    _gc.tune_for_a_server()  # the coordinator runs in this process
    code = run(_up(fleet, demo=demo, epochs=epochs))
    raise typer.Exit(code)


def serve_with_workers(settings: Any, workers: int) -> int:
    """``corral server --local-workers N``: the coordinator with ``settings`` and N workers
    of its own (local: jobs of target "local" run on them, "auto" ones last), as ``up``
    runs them; Ctrl-C stops all of it."""
    given = settings.bootstrap_admin_key
    key = given.get_secret_value().strip() if given else _admin_key(settings.data_dir)
    harden.hide_secrets(harden.BOOTSTRAP_KEY_ENVS)
    fleet = LocalFleet(data_dir=settings.data_dir, workers=workers, host=settings.host,
                       port=settings.port, admin_key=key, db_url=settings.db_url,
                       server=settings)  # fmt: skip
    _gc.tune_for_a_server()
    return run(_up(fleet, demo=False, epochs=1))


def _admin_key(data_dir: Path) -> str:
    """The server's bootstrap admin key (CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY, or the file's),
    else the key an earlier ``up`` kept in the data dir.

    Kept (mode 0600, beside the database it guards) so that a restart does not add one
    more admin key each time and the shell's CORRAL_API_KEY keeps working.
    """
    from corral.server.config import ServerSettings

    given = ServerSettings.load(partial=True).bootstrap_admin_key
    key = given.get_secret_value().strip() if given else ""
    if key:
        return key
    path = data_dir / "admin.key"
    with contextlib.suppress(OSError):
        key = path.read_text().strip()
    if key:
        return key
    key = f"ck_{secrets.token_urlsafe(32)}"
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


async def _up(fleet: LocalFleet, *, demo: bool, epochs: int) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stopping = False

    def on_signal() -> None:
        # Our own handler, not asyncio's: a second Ctrl-C must not abort the clean stop.
        nonlocal stopping
        if stopping:
            _output.err.print(f"still stopping: workers get up to {fleet.stop_grace_s:.0f}s")
            return
        stopping = True
        _output.err.print("stopping: workers first, then the coordinator…")
        main.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with fleet:
            await fleet.wait_ready()
            _banner(fleet)
            if demo:
                async with fleet.client() as client:
                    return await run_demo(client, epochs=epochs)
            await fleet.watch()
            return 0
    except asyncio.CancelledError:
        if not stopping:
            raise
        main.uncancel()
        _output.err.print("stopped")
        return ExitCode.INTERRUPTED if demo else ExitCode.OK
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _banner(fleet: LocalFleet) -> None:
    names = ", ".join(w.name for w in fleet.local_workers)
    corral = _corral_command()
    p = _output.out.print
    p(
        _output.line(
            _output.styled("Corral is up", "bold green"), ": coordinator ",
            _output.styled(fleet.url, "bold"), f", workers {names}",
        )
    )  # fmt: skip
    p(_output.line("Operator API key: ", _output.styled(fleet.admin_key, "bold")), soft_wrap=True)
    p(_output.line(f"Data: {fleet.data_dir} (worker logs: workers/*/worker.log)"), soft_wrap=True)
    p("From another shell:")
    env = f"  export CORRAL_URL={fleet.url} CORRAL_API_KEY={fleet.admin_key}"
    p(env, soft_wrap=True, markup=False)
    p(
        f"  {corral} submit --wait -- python -m corral.examples.digits --hidden 64",
        markup=False,
        soft_wrap=True,
    )
    p(f"  {corral} jobs ls; {corral} workers ls", markup=False, soft_wrap=True)
    p("Ctrl-C stops the workers, then the coordinator.")


def _corral_command() -> str:
    """How to type `corral` in another shell: its name if on PATH, else its full path."""
    if shutil.which("corral"):
        return "corral"
    script = Path(sys.argv[0])
    if script.name == "corral" and script.exists():
        return str(script.resolve())
    return f"{sys.executable} -m corral.cli"
