"""The ``corral`` command. Every failure a user can cause ends as one line and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup

from corral.cli import _output, jobs, serve, up, workers
from corral.cli._exit import ClickException, ExitCode, NoArgsIsHelpError, UsageError


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
app.command(
    "submit",
    # Everything after the command's first word belongs to the command: `corral submit
    # python -c 'print(1)'` works with or without `--`.
    context_settings={"allow_interspersed_args": False},
)(jobs.submit)
app.add_typer(jobs.app, name="jobs")
app.add_typer(workers.app, name="workers")
app.command("server")(serve.server)
app.command("worker")(serve.worker)
app.command("up")(up.up)


def main() -> None:
    app(prog_name="corral")
