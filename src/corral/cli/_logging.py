"""Logs of the processes the CLI runs (coordinator, worker): structlog on stderr, readable
on a terminal and JSON lines otherwise; stdout stays for what a command prints."""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import Annotated, TextIO

import structlog
import typer


class Level(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


LogLevel = Annotated[
    Level,
    typer.Option(envvar="CORRAL_LOG_LEVEL", show_envvar=True, help="Least severe log to show."),
]


def configure(level: Level | str = Level.INFO, *, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    tty = stream.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if tty:
        # Plain tracebacks: the rich formatter prints frame locals, which may hold a token.
        processors.append(
            structlog.dev.ConsoleRenderer(
                colors=True, exception_formatter=structlog.dev.plain_traceback
            )
        )
    else:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[str(level).upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
