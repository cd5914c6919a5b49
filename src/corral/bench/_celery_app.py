"""The Celery app of the peer workloads: broker and results on the Redis that
``_celery_peer`` starts (its URL in ``CORRAL_BENCH_REDIS``)."""

from __future__ import annotations

import os
import subprocess

from celery import Celery

url = os.environ.get("CORRAL_BENCH_REDIS", "redis://127.0.0.1:6379/0")
app = Celery("corral_bench", broker=url, backend=url)
app.conf.update(
    worker_prefetch_multiplier=4,
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task
def noop() -> None:
    return None


@app.task
def run_true() -> int:
    return subprocess.run(["true"], check=True).returncode
