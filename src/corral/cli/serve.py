"""``corral server`` and ``corral worker``: run one coordinator or one worker in the foreground."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from corral.cli import _gc, _logging, _output, _parse
from corral.cli._exit import ExitCode, Failure
from corral.cli._net import ensure_free
from corral.config import harden

T = TypeVar("T")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (a dependency on CPython/Unix; see docs/PERFORMANCE.md)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _run(main: Coroutine[Any, Any, T], *, fast_loop: bool = True) -> T:
    harden.follow_parent()  # a local fleet's coordinator or worker goes with its supervisor
    with asyncio.Runner(loop_factory=_loop_factory() if fast_loop else None) as runner:
        return runner.run(main)


def _flags(ctx: typer.Context) -> dict[str, Any]:
    """The settings given on the command line (each parameter is named after its field).
    A value click read from the environment is left to the settings, which read the same
    variable themselves and can say so in errors and in `corral config show`."""
    return {
        name: value
        for name, value in ctx.params.items()
        if name != "log_level" and _source(ctx, name) == "COMMANDLINE"
    }


def _recovery(data_dir: Path, *, reset: bool) -> None:
    """``--recover`` / ``--reset-state``: print the account, then the worker starts."""
    from corral.worker import recovery
    from corral.worker.journal import JournalBusy

    try:
        account = recovery.reset(data_dir) if reset else recovery.recover(data_dir)
    except JournalBusy as exc:
        raise Failure(f"{exc}: stop that worker first") from None
    except OSError as exc:
        raise Failure(f"cannot use {data_dir}: {exc.strerror or exc}") from None
    what = "reset" if reset else "recovery"
    _output.err.print(f"{what} of {data_dir}:", markup=False, soft_wrap=True)
    for line in str(account).splitlines():
        _output.err.print(f"  {_output.shown(line)}", markup=False, soft_wrap=True)


def _flag_names(ctx: typer.Context) -> dict[str, str]:
    """Field name -> its flag, for error messages."""
    return {p.name: p.opts[0] for p in ctx.command.params if p.name and p.opts}


def _source(ctx: typer.Context, name: str) -> str | None:
    # By name: Typer carries its own copy of Click, whose ParameterSource is another enum.
    source = ctx.get_parameter_source(name)
    return source.name if source is not None else None


def _opt(flag: str, env: str, help: str, **kw: Any) -> Any:
    """A flag that names its environment variable in --help."""
    return typer.Option(flag, envvar=env, show_envvar=True, show_default=False, help=help, **kw)


def _labels(value: str | None) -> dict[str, str] | None:
    """Checked here, to name --labels (or its env var) in the error."""
    return _parse.labels(value) if value is not None else None


def server(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        _opt("--host", "CORRAL_SERVER__HOST", "Address to listen on (default: 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        _opt("--port", "CORRAL_SERVER__PORT", "Port; 0 picks a free one (default: 8001)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        _opt(
            "--data-dir",
            "CORRAL_SERVER__DATA_DIR",
            "Where the SQLite store lives (default: .corral).",
        ),
    ] = None,
    db_url: Annotated[
        str | None,
        _opt(
            "--db",
            "CORRAL_SERVER__DB_URL",
            "SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db (default: SQLite in"
            " --data-dir).",
        ),
    ] = None,
    heartbeat_timeout_s: Annotated[
        float | None,
        _opt(
            "--heartbeat-timeout",
            "CORRAL_SERVER__HEARTBEAT_TIMEOUT_S",
            "Seconds of silence before a worker is offline (default: 120).",
        ),
    ] = None,
    heartbeat_interval_s: Annotated[
        float | None,
        _opt(
            "--heartbeat-interval",
            "CORRAL_SERVER__HEARTBEAT_INTERVAL_S",
            "Seconds between worker heartbeats (default: 30).",
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        _opt(
            "--access-log/--no-access-log",
            "CORRAL_SERVER__ACCESS_LOG",
            "Log each HTTP request, at info (default: off).",
        ),
    ] = None,
    ssl: Annotated[
        bool | None,
        _opt(
            "--ssl/--no-ssl",
            "CORRAL_SERVER__SSL",
            "Serve HTTPS with a certificate of the internal CA, made in <data-dir>/pki/ on"
            " first start; clients trust <data-dir>/pki/ca.pem (--ca-file).",
        ),
    ] = None,
    ssl_certfile: Annotated[
        Path | None,
        _opt("--ssl-certfile", "CORRAL_SERVER__SSL_CERTFILE", "Serve HTTPS with this certificate."),
    ] = None,
    ssl_keyfile: Annotated[
        Path | None,
        _opt("--ssl-keyfile", "CORRAL_SERVER__SSL_KEYFILE", "The certificate's private key."),
    ] = None,
    self_onboarding: Annotated[
        bool | None,
        _opt(
            "--allow-self-onboarding/--no-self-onboarding",
            "CORRAL_SERVER__SELF_ONBOARDING",
            "Anyone may onboard a tenant without a key (POST /api/onboard), a few an hour from"
            " one address (default: off: only operators onboard).",
        ),
    ] = None,
    local_workers: Annotated[
        int,
        typer.Option(
            "--local-workers",
            min=0,
            max=64,
            help="Start this many workers of its own beside it, as 'corral up' does (jobs of"
            " --target local run only there, --target auto ones last).",
        ),
    ] = 0,
    log_level: _logging.LogLevel = _logging.Level.INFO,
) -> None:
    """Run a coordinator. The first start prints the operator's API key, once."""
    from corral.server.app import StartupFailed, serve
    from corral.server.config import ServerSettings

    flags = {k: v for k, v in _flags(ctx).items() if k != "local_workers"}
    settings = ServerSettings.load(flags, flag_names=_flag_names(ctx))
    if local_workers:
        if settings.ssl or settings.ssl_certfile is not None:
            raise Failure("--local-workers: its workers speak plain HTTP on this machine;"
                          " start it without --ssl, or start workers with --ca-file")  # fmt: skip
        from corral.cli.up import serve_with_workers

        _logging.configure(log_level)
        raise typer.Exit(serve_with_workers(settings, local_workers))
    # The settings hold the bootstrap key now: no job of this user reads it from us.
    harden.hide_secrets(harden.BOOTSTRAP_KEY_ENVS)
    _logging.configure(log_level)

    def on_ready(url: str, new_admin_key: str | None) -> None:
        _output.err.print(f"coordinator listening on [bold]{url}[/]", soft_wrap=True)
        if settings.ssl and settings.ssl_certfile is None:
            ca = settings.data_dir / "pki" / "ca.pem"
            _output.err.print(f"its CA certificate: {ca} (workers and the CLI: --ca-file {ca})",
                              markup=False, soft_wrap=True)  # fmt: skip
        if new_admin_key:
            # stdout, not stderr: a script starting a fresh server may capture it.
            _output.out.print(f"Operator API key (shown once): {new_admin_key}", markup=False)
            _output.err.print(
                f"  export CORRAL_URL={url} CORRAL_API_KEY={new_admin_key}",
                markup=False,
                soft_wrap=True,
            )

    ensure_free(settings.host, settings.port)
    try:
        _gc.tune_for_a_server()
        _run(serve(settings, on_ready=on_ready))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a foreground server is meant to stop
    except StartupFailed as exc:  # --db, --data-dir or --host cannot be used
        raise Failure(str(exc), ExitCode.USAGE) from None
    except OSError as exc:
        raise Failure(f"cannot start the coordinator: {exc}", ExitCode.JOB_FAILED) from None


def worker(
    ctx: typer.Context,
    orchestrator_url: Annotated[
        str | None,
        _opt(
            "--orchestrator-url",
            "CORRAL_WORKER__ORCHESTRATOR_URL",
            "Coordinator URL(s); several, comma-separated, fail over in order.",
        ),
    ] = None,
    worker_token: Annotated[
        str | None,
        _opt(
            "--worker-token",
            "CORRAL_WORKER__TOKEN",
            "Token from 'corral workers create' (prefer the env var: argv is visible).",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        _opt(
            "--api-key",
            "CORRAL_WORKER__API_KEY",
            "Enrol with a certificate instead of a token, asking with this API key"
            " (workers.admin); the key of its own that the worker makes never leaves it.",
        ),
    ] = None,
    registration_token: Annotated[
        str | None,
        _opt(
            "--registration-token",
            "CORRAL_WORKER__REGISTRATION_TOKEN",
            "Enrol with a certificate, with a single-use token from 'corral workers enrol'.",
        ),
    ] = None,
    name: Annotated[
        str | None, _opt("--name", "CORRAL_WORKER__NAME", "Name (default: the host name).")
    ] = None,
    labels: Annotated[
        str | None,
        _opt(
            "--labels",
            "CORRAL_WORKER__LABELS",
            "k=v,… labels.",
            callback=_labels,
        ),
    ] = None,
    max_concurrent_tasks: Annotated[
        int | None,
        _opt(
            "--max-concurrent-tasks",
            "CORRAL_WORKER__MAX_CONCURRENT_TASKS",
            "Jobs run at once (default: 1).",
            min=1,
        ),
    ] = None,
    prefetch: Annotated[
        int | None,
        _opt(
            "--prefetch",
            "CORRAL_WORKER__PREFETCH",
            "Call tasks held beyond the slots, each waiting for one (default: four times the"
            " slots; 0: none).",
            min=0,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        _opt(
            "--profile",
            "CORRAL_WORKER__PROFILE",
            "benchmark|test|light: a preset of slots, resource limits and timeouts; each"
            " value is overridden by its own flag ('corral config show' shows the result).",
        ),
    ] = None,
    tags: Annotated[
        str | None,
        _opt("--tags", "CORRAL_WORKER__TAGS", "a,b,…: labels with no value (jobs' --tags)."),
    ] = None,
    gpu_ids: Annotated[
        str | None,
        _opt(
            "--gpu-ids",
            "CORRAL_WORKER__GPU_IDS",
            "The GPUs it owns, by index or uuid (default: CUDA_VISIBLE_DEVICES, else all).",
        ),
    ] = None,
    memory_buffer: Annotated[
        float | None,
        _opt(
            "--memory-buffer",
            "CORRAL_WORKER__MEMORY_BUFFER",
            "Share of memory no job's --memory-gb may claim (e.g. 0.2).",
            min=0,
            max=0.9,
        ),
    ] = None,
    max_cpu_percent: Annotated[
        float | None,
        _opt(
            "--max-cpu-percent",
            "CORRAL_WORKER__MAX_CPU_PERCENT",
            "Above it, take no new work (constrained) until it cools down.",
        ),
    ] = None,
    max_memory_percent: Annotated[
        float | None,
        _opt(
            "--max-memory-percent",
            "CORRAL_WORKER__MAX_MEMORY_PERCENT",
            "Above it, take no new work (constrained) until it cools down.",
        ),
    ] = None,
    max_gpu_percent: Annotated[
        float | None,
        _opt(
            "--max-gpu-percent",
            "CORRAL_WORKER__MAX_GPU_PERCENT",
            "Above it on any of its GPUs, take no new work until it cools down.",
        ),
    ] = None,
    cooldown_s: Annotated[
        float | None,
        _opt(
            "--cooldown",
            "CORRAL_WORKER__COOLDOWN_S",
            "Seconds every value must stay under its limit before new work (default: 30).",
        ),
    ] = None,
    db_path: Annotated[
        Path | None,
        _opt(
            "--db-path",
            "CORRAL_WORKER__DB_PATH",
            "A DuckDB file of the results it produced, one row a finished attempt.",
        ),
    ] = None,
    task_timeout_s: Annotated[
        float | None,
        _opt(
            "--task-timeout",
            "CORRAL_WORKER__TASK_TIMEOUT_S",
            "The longest any job runs here, in seconds (a job's own timeout if shorter).",
        ),
    ] = None,
    persistent: Annotated[
        bool | None,
        _opt(
            "--persistent/--ephemeral",
            "CORRAL_WORKER__PERSISTENT",
            "Stay for more jobs, or exit after one (default: ephemeral).",
        ),
    ] = None,
    heartbeat_interval_s: Annotated[
        float | None,
        _opt(
            "--heartbeat-interval",
            "CORRAL_WORKER__HEARTBEAT_INTERVAL_S",
            "Seconds between heartbeats (default: 30).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        _opt(
            "--data-dir",
            "CORRAL_WORKER__DATA_DIR",
            "Where the worker keeps its local state and job directories.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        _opt(
            "--ca-file",
            "CORRAL_WORKER__CA_FILE",
            "Trust this CA for an https:// coordinator (its <data-dir>/pki/ca.pem).",
        ),
    ] = None,
    ssl_no_verify: Annotated[
        bool | None,
        _opt(
            "--ssl-no-verify",
            "CORRAL_WORKER__SSL_NO_VERIFY",
            "Do not check the coordinator's certificate (development only; warns).",
        ),
    ] = None,
    sandbox: Annotated[
        str | None,
        _opt(
            "--sandbox",
            "CORRAL_WORKER__SANDBOX",
            "on|auto|off: run each attempt in namespaces that hide this worker's data"
            " directory (journal, other attempts, keys) from it, and its own processes from"
            " others (default: off; auto: where the machine allows it).",
        ),
    ] = None,
    run_as_users: Annotated[
        str | None,
        _opt(
            "--run-as-users",
            "CORRAL_WORKER__RUN_AS_USERS",
            "FIRST-LAST uids (the worker as root): each attempt runs as a free one of them, in"
            " a directory of its own, and what it leaves running is killed when it ends."
            " Workers on one host never share a uid; one that finds too few free exits 2.",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        _opt(
            "--metrics-port",
            "CORRAL_WORKER__METRICS_PORT",
            "Serve Prometheus /metrics and /health on this port (default: 2112; 0: off).",
            min=0,
            max=65535,
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        _opt(
            "--metrics-host",
            "CORRAL_WORKER__METRICS_HOST",
            "Address /metrics listens on (default: 127.0.0.1; 0.0.0.0 for a Prometheus elsewhere).",
        ),
    ] = None,
    ui: Annotated[
        bool | None,
        _opt(
            "--ui/--no-ui",
            "CORRAL_WORKER__UI",
            "Serve the worker's own page: its status, its log, its running jobs, Pause and"
            " Resume (default: off).",
        ),
    ] = None,
    ui_host: Annotated[
        str | None,
        _opt(
            "--ui-host",
            "CORRAL_WORKER__UI_HOST",
            "Address the page listens on (default: 127.0.0.1: this machine only).",
        ),
    ] = None,
    ui_port: Annotated[
        int | None,
        _opt(
            "--ui-port",
            "CORRAL_WORKER__UI_PORT",
            "The page's port (default: 5000; 0: a free one, logged).",
            min=0,
            max=65535,
        ),
    ] = None,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover",
            help="First check and repair the local journal and attempt"
            " directories, and say what was done.",
        ),
    ] = False,
    reset_state: Annotated[
        bool,
        typer.Option(
            "--reset-state",
            help="First start from an empty local state: stop what"
            " it ran (the coordinator retries it) and remove its journal.",
        ),
    ] = False,
    log_level: _logging.LogLevel = _logging.Level.INFO,
) -> None:
    """Run a worker: register, take jobs over SSE, run each as a child process."""
    from corral.worker.config import WorkerSettings

    if recover and reset_state:
        raise Failure("--recover and --reset-state: choose one")
    flags = {k: v for k, v in _flags(ctx).items() if k not in ("recover", "reset_state")}
    settings = WorkerSettings.load(flags, flag_names=_flag_names(ctx))
    from corral.worker.agent import run_worker
    from corral.worker.results_db import available

    if settings.db_path is not None and (why := available()):
        raise Failure(why)

    _logging.configure(log_level)
    if recover or reset_state:
        _recovery(settings.work_dir, reset=reset_state)
    try:
        # The standard loop: uvloop starts a process with fork(), the standard one with vfork(),
        # and a job's start is most of a worker's work (it cost 40 % more CPU per job).
        code = _run(run_worker(settings), fast_loop=False)
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
    raise typer.Exit(int(code))
