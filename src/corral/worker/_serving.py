"""Which local HTTP servers a worker opens (``--metrics-port``, ``--ui``), bound before it
starts so that an address in use is said at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from corral.worker.config import WorkerSettings
from corral.worker.monitor import LocalServer, LocalView, Monitor
from corral.worker.ui import LogTail, Page

__all__ = ["open_servers"]


def open_servers(
    settings: WorkerSettings,
    monitor: Monitor,
    *,
    view: Callable[[], LocalView],
    pause: Callable[[bool], Awaitable[bool]],
    log: Any,
) -> tuple[list[LocalServer], LogTail | None] | str:
    """The servers, bound, and the page's log tail; or why one asked for cannot listen.

    The default metrics port in use (a second worker on the machine) is said and skipped: a
    worker's work goes on without its /metrics. A port that was asked for must be had."""
    wanted: list[tuple[LocalServer, bool]] = []
    if settings.metrics_port:
        given = bool({"metrics_port", "metrics_host"} & settings.model_fields_set)
        wanted.append((LocalServer(monitor.app(), settings.metrics_host, settings.metrics_port,
                                   what="metrics"), given))  # fmt: skip
    tail = None
    if settings.ui:
        tail = LogTail()
        page = Page(view, pause, tail, bind_host=settings.ui_host)
        wanted.append((LocalServer(page.app(), settings.ui_host, settings.ui_port,
                                   what="page"), True))  # fmt: skip
    bound: list[LocalServer] = []
    for server, given in wanted:
        try:
            server.bind()
        except OSError as exc:
            why = exc.strerror or str(exc)
            if not given:
                log.warning("worker.metrics_unavailable", url=server.url, error=why,
                            hint="--metrics-port PORT for another, or 0 for none")  # fmt: skip
                continue
            for other in bound:
                other.close()
            return f"cannot listen on {server.url} for its {server.what}: {why}"
        bound.append(server)
    return bound, tail
