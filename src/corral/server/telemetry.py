"""The coordinator's Prometheus metrics (``GET /metrics``; the list is docs/monitoring.md).

Counters and histograms of jobs and workers are fed by the one path every change takes:
``observe`` reads each history entry once its transaction has committed (``Core`` calls it
where it logs the entry), so a metric never disagrees with the history it counts. The
gauges of the queue, the jobs, the workers and the GPUs are read from the database at each
scrape (``store.census``): every coordinator of one database gives the same values, and
none keeps a copy. Each app has a registry of its own (tests run several in one process).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__
from corral.model import AttemptOutcome, JobState, WorkerStatus
from corral.model.history import Kind
from corral.store import as_utc
from corral.store.census import Census

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# A ``_created`` series beside each counter and histogram says nothing a scrape needs.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds: a dispatch from milliseconds to an hour's wait; a job from a no-op to a day.
_WAIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_RUN_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400)
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_TX_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# The history kinds that end an attempt; their detail names its outcome.
_ENDS = frozenset({Kind.JOB_REQUEUED, Kind.JOB_SUCCEEDED, Kind.JOB_FAILED, Kind.JOB_CANCELLED})


class Telemetry:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        info = Gauge("corral_build_info", "The running coordinator.", ["version", "python"],
                     registry=r)  # fmt: skip
        info.labels(__version__, platform.python_version()).set(1)
        self.submitted = Counter(
            "corral_jobs_submitted", "Jobs submitted through this coordinator.", registry=r
        )
        self.ended = Counter("corral_attempts_ended", "Attempts ended, by outcome.",
                             ["outcome"], registry=r)  # fmt: skip
        self.retries = Counter("corral_jobs_retries",
                               "Attempts that ended and left their job queued to run again.",
                               registry=r)  # fmt: skip
        self.changes = Counter("corral_changes", "Landed changes, by their history kind.",
                               ["kind"], registry=r)  # fmt: skip
        self.dispatch = Histogram("corral_dispatch_latency_seconds",
                                  "A job's submit to its first attempt's start.",
                                  buckets=_WAIT_BUCKETS, registry=r)  # fmt: skip
        self.duration = Histogram("corral_job_duration_seconds",
                                  "An attempt's start to its end, by outcome.", ["outcome"],
                                  buckets=_RUN_BUCKETS, registry=r)  # fmt: skip
        self.heartbeats = Counter("corral_workers_heartbeats", "Heartbeats received.",
                                  registry=r)  # fmt: skip
        self.http = Histogram("corral_http_request_duration_seconds",
                              "HTTP requests, by route template and status.",
                              ["method", "route", "status"], buckets=_HTTP_BUCKETS,
                              registry=r)  # fmt: skip
        self.tx = Histogram("corral_db_transaction_duration_seconds",
                            "One transaction, its commit included.", buckets=_TX_BUCKETS,
                            registry=r)  # fmt: skip
        self.streams_open = Gauge("corral_workers_streams_open",
                                  "Workers' event streams open on this coordinator.",
                                  registry=r)  # fmt: skip
        # Every label value known up front starts at zero, so that a rate over the first
        # of them (the first lost attempt, the first worker gone offline) is seen.
        for outcome in AttemptOutcome:
            self.ended.labels(outcome.value)
            self.duration.labels(outcome.value)
        for kind in Kind:
            self.changes.labels(kind.value)
        self._census: Census | None = None
        self._census_at: datetime | None = None
        r.register(_CensusCollector(self))

    def observe(self, entry: Mapping[str, Any]) -> None:
        """One landed change, after its commit."""
        kind = entry["kind"]
        self.changes.labels(kind).inc()
        if kind == Kind.JOB_SUBMITTED:
            self.submitted.inc()
        detail = entry.get("detail") or {}
        if "waited_s" in detail:
            self.dispatch.observe(detail["waited_s"])
        outcome = detail.get("outcome")
        if kind in _ENDS and outcome:
            self.ended.labels(outcome).inc()
            if kind == Kind.JOB_REQUEUED and outcome != "preempted":
                self.retries.inc()
            if "ran_s" in detail:
                self.duration.labels(outcome).observe(detail["ran_s"])

    def set_census(self, census: Census, now: datetime) -> None:
        """What the scrape read from the database, for the collector to report."""
        self._census, self._census_at = census, now

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CensusCollector(Collector):
    """The gauges read from the database; the scrape reads it first (``set_census``)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.t = telemetry

    def describe(self) -> list[GaugeMetricFamily]:
        return self._families(Census(), None)

    def collect(self) -> list[GaugeMetricFamily]:
        return self._families(self.t._census or Census(), self.t._census_at)

    @staticmethod
    def _families(c: Census, now: datetime | None) -> list[GaugeMetricFamily]:
        depth = GaugeMetricFamily("corral_queue_depth_jobs", "Jobs queued, per tenant.",
                                  labels=["tenant"])  # fmt: skip
        oldest = GaugeMetricFamily("corral_queue_oldest_age_seconds",
                                   "Age of the oldest queued job, per tenant.",
                                   labels=["tenant"])  # fmt: skip
        for tenant, (n, at) in sorted(c.queued.items()):
            depth.add_metric([tenant], n)
            if at is not None and now is not None:
                oldest.add_metric([tenant], max((now - as_utc(at)).total_seconds(), 0.0))
        states = GaugeMetricFamily("corral_jobs_in_state", "Jobs in each state.",
                                   labels=["state"])  # fmt: skip
        for s in JobState:
            states.add_metric([s.value], c.jobs.get(s.value, 0))
        workers = GaugeMetricFamily("corral_workers_in_status", "Workers by shown status.",
                                    labels=["status"])  # fmt: skip
        for w in WorkerStatus:
            workers.add_metric([w.value], c.workers.get(w.value, 0))
        total = GaugeMetricFamily("corral_gpus_online", "GPUs of workers not offline.")
        total.add_metric([], c.gpus_total)
        used = GaugeMetricFamily("corral_gpus_in_use", "GPUs held by active attempts.")
        used.add_metric([], c.gpus_in_use)
        return [depth, oldest, states, workers, total, used]


class HttpTimer:
    """Pure ASGI: each request's duration by its route's template (``/api/jobs/{job_id}``,
    never an id), method and status. A path no route matched is counted as ``unmatched``."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what a request that raised before it answered is counted as
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.telemetry.http.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
