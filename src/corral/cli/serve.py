"""``corral server`` and ``corral worker``: run one coordinator or one worker in the foreground."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from corral.cli import _logging, _output, _parse
from corral.cli._exit import ExitCode, Failure
from corral.cli._net import ensure_free


def _given(**values: Any) -> dict[str, Any]:
    """Only the flags the user gave, so env vars and defaults fill the rest."""
    return {k: v for k, v in values.items() if v is not None}


def _env(name: str, help: str) -> Any:
    """A server flag that also reads ServerSettings' own env var, and says so."""
    return typer.Option(envvar=name, show_envvar=True, show_default=False, help=help)


def server(
    host: Annotated[
        str | None, _env("CORRAL_SERVER__HOST", "Address to listen on (default: 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, _env("CORRAL_SERVER__PORT", "Port; 0 picks a free one (default: 8001).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        _env("CORRAL_SERVER__DATA_DIR", "Where the SQLite store lives (default: .corral)."),
    ] = None,
    db: Annotated[
        str | None,
        _env(
            "CORRAL_SERVER__DB_URL",
            "SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db (default: SQLite in"
            " --data-dir).",
        ),
    ] = None,
    heartbeat_timeout: Annotated[
        float | None,
        _env(
            "CORRAL_SERVER__HEARTBEAT_TIMEOUT_S",
            "Seconds of silence before a worker is offline (default: 120).",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        _env(
            "CORRAL_SERVER__HEARTBEAT_INTERVAL_S",
            "Seconds between worker heartbeats (default: 30).",
        ),
    ] = None,
    log_level: _logging.LogLevel = _logging.Level.INFO,
) -> None:
    """Run a coordinator. The first start prints an admin API key, once."""
    from corral.server.app import StartupFailed, serve
    from corral.server.config import ServerSettings

    _logging.configure(log_level)
    settings = ServerSettings(
        **_given(
            host=host,
            port=port,
            data_dir=data_dir,
            db_url=db,
            heartbeat_timeout_s=heartbeat_timeout,
            heartbeat_interval_s=heartbeat_interval,
        )
    )

    def on_ready(url: str, new_admin_key: str | None) -> None:
        _output.err.print(f"coordinator listening on [bold]{url}[/]", soft_wrap=True)
        if new_admin_key:
            # stdout, not stderr: a script starting a fresh server may capture it.
            _output.out.print(f"Admin API key (shown once): {new_admin_key}", markup=False)
            _output.err.print(
                f"  export CORRAL_URL={url} CORRAL_API_KEY={new_admin_key}",
                markup=False,
                soft_wrap=True,
            )

    ensure_free(settings.host, settings.port)
    try:
        asyncio.run(serve(settings, on_ready=on_ready))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a foreground server is meant to stop
    except StartupFailed as exc:  # --db, --data-dir or --host cannot be used
        raise Failure(str(exc), ExitCode.USAGE) from None
    except OSError as exc:
        raise Failure(f"cannot start the coordinator: {exc}", ExitCode.JOB_FAILED) from None


def worker(
    orchestrator_url: Annotated[
        str,
        typer.Option(
            envvar="CORRAL_ORCHESTRATOR_URL", show_envvar=True, help="Coordinator URL(s)."
        ),
    ],
    worker_token: Annotated[
        str,
        typer.Option(
            envvar="CORRAL_WORKER_TOKEN",
            show_envvar=True,
            help="Token from 'corral workers create' (prefer the env var: argv is visible).",
        ),
    ],
    name: Annotated[
        str | None, typer.Option(envvar="CORRAL_WORKER_NAME", show_envvar=True, help="Name.")
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(envvar="CORRAL_WORKER_LABELS", show_envvar=True, help="k=v,… labels."),
    ] = None,
    max_concurrent_tasks: Annotated[
        int | None,
        typer.Option(
            envvar="CORRAL_MAX_CONCURRENT_TASKS",
            show_envvar=True,
            min=1,
            help="Jobs run at once (default: 1).",
            show_default=False,
        ),
    ] = None,
    persistent: Annotated[
        bool | None,
        typer.Option(
            "--persistent/--ephemeral",
            envvar="CORRAL_WORKER_PERSISTENT",
            show_envvar=True,
            help="Stay for more jobs, or exit after one (default: ephemeral).",
            show_default=False,
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            envvar="CORRAL_HEARTBEAT_INTERVAL",
            show_envvar=True,
            help="Seconds between heartbeats (default: 30).",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="CORRAL_WORKER_DATA_DIR",
            show_envvar=True,
            help="Where the worker keeps its local state and job directories.",
            show_default=False,
        ),
    ] = None,
    log_level: _logging.LogLevel = _logging.Level.INFO,
) -> None:
    """Run a worker: register, take jobs over SSE, run each as a child process."""
    from corral.worker.config import WorkerSettings

    settings = WorkerSettings(
        **_given(
            orchestrator_url=orchestrator_url,
            worker_token=worker_token,
            name=name,
            labels=_parse.labels(labels) if labels is not None else None,
            max_concurrent_tasks=max_concurrent_tasks,
            persistent=persistent,
            heartbeat_interval_s=heartbeat_interval,
            data_dir=data_dir,
        )
    )
    from corral.worker.agent import run_worker

    _logging.configure(log_level)
    try:
        code = asyncio.run(run_worker(settings))
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    raise typer.Exit(int(code))
