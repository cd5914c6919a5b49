"""Logs of the processes the CLI runs (coordinator, worker): structlog on stderr, readable
on a terminal and JSON lines otherwise; stdout stays for what a command prints.

Stdlib logging goes through the same pipeline (structlog's ProcessorFormatter on the root
logger), so uvicorn's lines look like Corral's own.
"""

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
    typer.Option(
        envvar="CORRAL_LOG_LEVEL",
        show_envvar=True,
        case_sensitive=False,
        help="Least severe log to show.",
    ),
]


class _Handler(logging.StreamHandler[TextIO]):
    """Ours, told apart so that configuring again replaces it and no other handler."""


def configure(level: Level | str = Level.INFO, *, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    number = logging.getLevelNamesMapping()[str(level).upper()]
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[structlog.typing.Processor]
    if stream.isatty():
        # Plain tracebacks: the rich formatter prints frame locals, which may hold a token.
        renderer = [
            structlog.dev.ConsoleRenderer(
                colors=True, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    else:
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    handler = _Handler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    # uvicorn's start-up chatter repeats what Corral says at info; its warnings stay. The
    # access log (uvicorn.access, at info) follows the level asked for.
    quiet = number if number <= logging.DEBUG else max(number, logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(quiet)
    # Whatever an earlier uvicorn.Config(log_level=…) in this process set, the access log
    # follows the root's level and handler.
    for name in ("uvicorn", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.NOTSET)
        lg.propagate, lg.disabled = True, False
    # httpx says every request at info: a worker's heartbeats would drown what matters.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
