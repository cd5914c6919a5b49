"""The peer workloads on Celery, in a process of their own (``python -m
corral.bench._celery_peer``, settings as JSON on stdin): a ``redis-server`` on a free
loopback port as broker and result backend, one prefork worker with the machine's CPUs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from corral.bench._peer_common import read_cfg, timed, write
from corral.local import free_port


@contextlib.contextmanager
def _proc(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    cfg = read_cfg()
    redis = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port("127.0.0.1")
    url = f"redis://127.0.0.1:{port}/0"
    os.environ["CORRAL_BENCH_REDIS"] = url
    cpus = cfg.get("cpus") or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="corral-bench-redis-") as tmp, \
         _proc([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", tmp]), \
         _proc([sys.executable, "-m", "celery", "-A", "corral.bench._celery_app", "worker",
                "--concurrency", str(cpus), "--pool", "prefork", "--loglevel", "warning",
                "--without-gossip", "--without-mingle", "--without-heartbeat"],
               env={**os.environ}):  # fmt: skip
        from celery import __version__, group

        from corral.bench._celery_app import noop, run_true

        deadline = time.monotonic() + 60
        while True:  # until the worker takes tasks
            try:
                noop.delay().get(timeout=2)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
        result = timed(
            lambda n: group(noop.s() for _ in range(n)).apply_async().get(timeout=600),
            lambda: noop.delay().get(timeout=60),
            lambda n: group(run_true.s() for _ in range(n)).apply_async().get(timeout=600),
            cfg,
        )
        result["version"] = __version__
        result["concurrency"] = cpus
        write(result)


if __name__ == "__main__":
    main()
