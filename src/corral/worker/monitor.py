"""The worker's own ``/metrics`` (Prometheus) and ``/health`` (JSON), served in its loop.

Each figure is read when it is asked for: what the agent holds now (``LocalView``), the
machine through psutil and NVML. Only what cannot be read later is counted as it happens:
attempts ended, their run times, the last loss a job reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil  # type: ignore[import-untyped]
import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from corral.protocol.metric_lines import METRIC_PREFIX, parse
from corral.worker._gpus import gpu_readings
from corral.worker.guard import CpuMeter

__all__ = ["STATUSES", "LocalServer", "LocalView", "Monitor", "RunningView", "last_loss"]

log = structlog.get_logger("corral.worker.monitor")

# How an attempt ends here (RunningAttempt.ended_as): each counted from 0, so a rate of
# any of them is defined from the worker's start.
STATUSES = ("succeeded", "failed", "cancelled", "timed_out", "declined", "stopped", "lost")
# An attempt's run: from a second to a day (training runs for hours).
BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0,
           12 * 3600.0, 24 * 3600.0, math.inf)  # fmt: skip
_PREFIX = METRIC_PREFIX.encode()


@dataclass(frozen=True)
class RunningView:
    job_id: str
    attempt: int
    name: str | None  # unknown for an attempt adopted after a restart
    since: float | None  # when its process started (epoch seconds); None: not yet
    pid: int | None


@dataclass(frozen=True)
class LocalView:
    """What the agent knows of itself at one moment: for /health, /metrics and its page."""

    name: str
    worker_id: str | None
    status: str  # connecting, idle, busy, paused, constrained, draining, stopping
    connected: bool  # registered, and its event stream open
    coordinator_url: str  # the one it talks to now, without any userinfo
    running: list[RunningView] = field(default_factory=list)
    last_heartbeat: float | None = None  # when a beat was last answered (epoch seconds)
    paused: bool = False  # as the coordinator last answered its own pause
    constrained: str | None = None  # why it takes no new work, in words
    certificate_expires_at: datetime | None = None  # enrolled with a certificate
    gpus: list[int] = field(default_factory=list)  # its NVIDIA GPUs, by NVML index


def bare_url(url: str) -> str:
    """``url`` without any user or password in it: a page shows no secret."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def last_loss(data: bytes) -> float | None:
    """The last ``loss`` in the ``corral.metric`` lines of ``data`` (NaN for one the SDK
    sent as null: a diverged loss), or None when it holds none. Cheap when it has no line."""
    if _PREFIX not in data:
        return None
    losses = [v for _, name, v in parse(data.decode("utf-8", "replace")) if name == "loss"]
    if not losses:
        return None
    return math.nan if losses[-1] is None else losses[-1]


@dataclass(frozen=True)
class _Scrape:
    """One request's reading of the agent, taken on the loop, read on a thread."""

    view: LocalView
    completed: dict[str, int]
    buckets: list[int]
    seconds: float
    loss: float | None


_SCRAPE: ContextVar[_Scrape] = ContextVar("corral_worker_scrape")


class Monitor:
    """Counts what ends, and reads the rest when asked (``families``)."""

    def __init__(self, view: Callable[[], LocalView]) -> None:
        self.view = view
        self.started = time.monotonic()
        self.completed = dict.fromkeys(STATUSES, 0)
        self._buckets = [0] * len(BUCKETS)  # cumulative, as Prometheus has them
        self._seconds = 0.0
        self.loss: float | None = None
        self._metrics_cpu = CpuMeter()  # one meter each: a reading is "since the last one"
        self._health_cpu = CpuMeter()
        self.registry = CollectorRegistry()  # its own: tests run several workers at once
        self.registry.register(_Collector(self))

    # ---- what happens --------------------------------------------------------------------

    def ended(self, status: str, ran_s: float | None) -> None:
        """An attempt ended as ``status``; ``ran_s``: how long its process ran, if it did."""
        self.completed[status] = self.completed.get(status, 0) + 1
        if ran_s is not None:
            ran_s = max(ran_s, 0.0)
            self._seconds += ran_s
            for i, bound in enumerate(BUCKETS):
                if ran_s <= bound:
                    self._buckets[i] += 1

    def output(self, data: bytes) -> None:
        """A batch of a job's output, as it is shipped: the last loss it reported."""
        if (loss := last_loss(data)) is not None:
            self.loss = loss

    # ---- what is read --------------------------------------------------------------------

    def take(self) -> _Scrape:
        return _Scrape(self.view(), dict(self.completed), list(self._buckets), self._seconds,
                       self.loss)  # fmt: skip

    def families(self, s: _Scrape) -> Iterator[Metric]:
        hist = HistogramMetricFamily(
            "worker_task_duration_seconds", "An attempt's run here, from its start to its end.",
            buckets=[(_le(b), n) for b, n in zip(BUCKETS, s.buckets, strict=True)],
            sum_value=s.seconds,
        )  # fmt: skip
        yield hist
        done = CounterMetricFamily(
            "worker_tasks_completed_total", "Attempts ended here, by how they ended.",
            labels=["status"],
        )  # fmt: skip
        for status, n in s.completed.items():
            done.add_metric([status], n)
        yield done
        if s.loss is not None:
            yield GaugeMetricFamily("worker_training_loss",
                                    "The last loss its jobs reported (corral.sdk.report).",
                                    value=s.loss)  # fmt: skip
        yield GaugeMetricFamily("worker_cpu_usage_percent",
                                "The machine's CPU use since the previous scrape.",
                                value=self._metrics_cpu.percent())  # fmt: skip
        yield GaugeMetricFamily("worker_memory_usage_bytes",
                                "Resident memory of the worker and its jobs' processes.",
                                value=resident_bytes(s.view))  # fmt: skip
        yield GaugeMetricFamily("worker_concurrent_tasks", "Attempts running here now.",
                                value=len(s.view.running))  # fmt: skip
        yield from _gpu_families(s.view.gpus)

    def health(self, s: _Scrape) -> dict[str, Any]:
        """``/health``'s document (TensorFleet's fields, and the coordinator's URL)."""
        view, now = s.view, time.time()
        uptime = time.monotonic() - self.started
        beat = view.last_heartbeat
        return {
            "worker_id": view.worker_id,
            "name": view.name,
            "status": view.status,
            "uptime": _duration(uptime),
            "uptime_s": round(uptime, 3),
            "active_tasks": len(view.running),
            "completed_tasks": sum(s.completed.values()),
            "cpu_usage": round(self._health_cpu.percent(), 1),
            "memory_usage": resident_bytes(view),
            "last_heartbeat": _iso(beat) if beat is not None else None,
            "last_heartbeat_age_s": round(now - beat, 3) if beat is not None else None,
            "coordinator_connection": "connected" if view.connected else "disconnected",
            "coordinator_url": view.coordinator_url,
        }

    def app(self) -> Starlette:
        async def metrics(request: Request) -> Response:
            _SCRAPE.set(self.take())  # the thread below gets a copy of this context
            body = await asyncio.to_thread(generate_latest, self.registry)
            return Response(body, media_type=CONTENT_TYPE_LATEST)

        async def health(request: Request) -> Response:
            return JSONResponse(await asyncio.to_thread(self.health, self.take()))

        return Starlette(routes=[Route("/metrics", metrics, methods=["GET"]),
                                 Route("/health", health, methods=["GET"])],
                         exception_handlers={HTTPException: problem})  # fmt: skip


class _Collector(Collector):
    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def collect(self) -> Iterable[Metric]:
        scrape = _SCRAPE.get(None)
        return self.monitor.families(scrape if scrape is not None else self.monitor.take())


def _gpu_families(indices: list[int]) -> Iterator[Metric]:
    readings = gpu_readings(indices) if indices else None
    if not readings:
        return
    util = GaugeMetricFamily("worker_gpu_utilization_percent", "GPU use, as NVML reports it.",
                             labels=["gpu"])  # fmt: skip
    used = GaugeMetricFamily("worker_gpu_memory_used_bytes", "GPU memory in use.", labels=["gpu"])
    total = GaugeMetricFamily("worker_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
    for r in readings:
        for family, value in ((util, r.utilization_percent), (used, r.memory_used_bytes),
                              (total, r.memory_total_bytes)):  # fmt: skip
            if value is not None:
                family.add_metric([str(r.index)], value)
    yield from (f for f in (util, used, total) if f.samples)


def resident_bytes(view: LocalView) -> int:
    """Resident memory of this process, its children (jobs, warm interpreters) and the jobs
    it adopted after a restart (no longer its children), each counted once."""
    me = psutil.Process()
    procs: dict[int, Any] = {me.pid: me}
    roots = [me]
    for r in view.running:
        if r.pid is not None and r.pid not in procs:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(r.pid)
                procs[proc.pid] = proc
                roots.append(proc)
    for root in roots:
        with contextlib.suppress(psutil.Error):
            procs.update((p.pid, p) for p in root.children(recursive=True))
    total = 0
    for proc in procs.values():
        with contextlib.suppress(psutil.Error):
            total += int(proc.memory_info().rss)
    return total


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _duration(seconds: float) -> str:
    """``2h15m30s``, as TensorFleet's guide writes an uptime."""
    s = int(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m{s}s" if h else f"{m}m{s}s" if m else f"{s}s"


async def problem(request: Request, exc: Exception) -> Response:
    """A 404, 405… of these small servers, as JSON."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    headers = getattr(exc, "headers", None)
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


class _InLoop(uvicorn.Server):
    """A uvicorn server that leaves the signals to the agent."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LocalServer:
    """One small HTTP server in the worker's own loop (its /metrics, or its page). It binds
    first (``bind``: an address in use is an OSError there, not an exit inside uvicorn)."""

    def __init__(self, app: ASGIApp, host: str, port: int, *, what: str) -> None:
        self.app, self.host, self.port, self.what = app, host, port, what
        self._sock: socket.socket | None = None
        self._server: _InLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def bind(self) -> None:
        family, kind, proto, _, addr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(False)  # no job inherits the listening socket
        self._sock = sock
        self.port = sock.getsockname()[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        assert self._sock is not None
        config = uvicorn.Config(self.app, log_config=None, access_log=False, lifespan="off",
                                proxy_headers=False, server_header=False,
                                timeout_graceful_shutdown=2)  # fmt: skip
        self._server = _InLoop(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]),
                                         name=f"local {self.what}")  # fmt: skip
        log.info("worker.serving", what=self.what, url=self.url)

    def close(self) -> None:
        """Bound, never started: let the address go."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def stop(self) -> None:
        """Stop listening, let the requests in flight finish (2 s at most), and return."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 5)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task})
        self.close()
