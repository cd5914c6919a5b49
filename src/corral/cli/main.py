"""The ``corral`` command. Every failure a user can cause ends as one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from corral.cli import (
    _output,
    accounts,
    artifacts,
    bench,
    config,
    jobs,
    results,
    serve,
    up,
    workers,
)
from corral.cli._api import use_root
from corral.cli._exit import ClickException, ExitCode, NoArgsIsHelpError, UsageError
from corral.config import CONFIG_ENV, CliSettings, ConfigError, use_file


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Group(TyperGroup):
    """Root group that prints errors as one line instead of Click's usage box."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        code: int
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except NoArgsIsHelpError as exc:
            # Rich help is printed while the error is built; plain help comes as its message.
            if exc.format_message().strip():
                print(exc.format_message())
            code = ExitCode.USAGE
        except UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _error(f"{exc.format_message()}{hint}")
            code = exc.exit_code
        except ClickException as exc:
            _error(exc.format_message())
            code = exc.exit_code
        except ConfigError as exc:  # a setting's value, or the config file, is not usable
            _error(str(exc))
            code = ExitCode.USAGE
        except ValidationError as exc:
            # Settings or request built from flags and env vars: say which value is wrong.
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or exc.title
            _error(f"{where}: {first['msg']}")
            code = ExitCode.USAGE
        except typer.Abort:
            _error("aborted")
            code = ExitCode.INTERRUPTED
        if standalone_mode:
            sys.exit(code)
        return code


def _error(message: str) -> None:
    _output.err.print(
        f"corral: error: {_one_line(message)}", markup=False, highlight=False, soft_wrap=True
    )


app = typer.Typer(
    cls=_Group,
    name="corral",
    help="Run ML jobs on a fleet: a coordinator, workers, and this CLI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar=CONFIG_ENV,
            show_envvar=True,
            show_default=False,
            metavar="FILE",
            help="TOML file of settings: below flags and env vars, above defaults.",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="CORRAL_TOKEN",
            show_envvar=True,
            show_default=False,
            help="An API token ('corral token'), sent instead of the API key.",
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="CORRAL_TOKEN_FILE",
            show_envvar=True,
            show_default=False,
            metavar="FILE",
            help="A file holding an API token, sent instead of the API key.",
        ),
    ] = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            "--ca-file",
            envvar="CORRAL_CA_FILE",
            show_envvar=True,
            show_default=False,
            metavar="FILE",
            help="Trust this CA for an https:// coordinator (its <data-dir>/pki/ca.pem).",
        ),
    ] = None,
    ssl_no_verify: Annotated[
        bool,
        typer.Option(
            "--ssl-no-verify",
            envvar="CORRAL_SSL_NO_VERIFY",
            show_envvar=True,
            help="Do not check the coordinator's certificate (development only; warns).",
        ),
    ] = False,
) -> None:
    ctx.with_resource(use_file(config_file))
    use_root(token, token_file, ca_file, ssl_no_verify)
    # The top-level settings reach every command's --url, --api-key and --log-level as
    # their defaults (click still lets a flag or the option's env var win).
    cli = CliSettings.load()
    given = {
        name: getattr(cli, name) for name, origin in cli.origins.items() if origin.kind != "default"
    }
    if cli.api_key is not None and "api_key" in given:
        given["api_key"] = cli.api_key.get_secret_value()
    ctx.default_map = _defaults(ctx.command, given)


def _defaults(command: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A default_map: for each command, the values of the parameters it has."""
    if isinstance(command, TyperGroup):
        return {name: _defaults(sub, values) for name, sub in command.commands.items()}
    return {p.name: values[p.name] for p in command.params if p.name in values}


app.command(
    "submit",
    # Everything after the command's first word belongs to the command: `corral submit
    # python -c 'print(1)'` works with or without `--`.
    context_settings={"allow_interspersed_args": False},
)(jobs.submit)
app.add_typer(jobs.app, name="jobs")
app.add_typer(workers.app, name="workers")
app.add_typer(config.app, name="config")
app.add_typer(artifacts.app, name="artifacts")
app.add_typer(results.app, name="results")
app.command("onboard")(accounts.onboard)
app.command("token")(accounts.token)
app.command("audit")(accounts.audit)
app.add_typer(accounts.tenants, name="tenants")
app.add_typer(accounts.keys, name="keys")
app.command("server")(serve.server)
app.command("worker")(serve.worker)
app.command("up")(up.up)
app.command("bench")(bench.bench)


def main() -> None:
    app(prog_name="corral")
