"""The peer workloads on Ray, in a process of their own (``python -m corral.bench._ray_peer``,
settings as JSON on stdin): ``ray.init`` with the machine's CPUs, no-op remote functions."""

from __future__ import annotations

import os
import subprocess

import ray

from corral.bench._peer_common import read_cfg, timed, write


@ray.remote
def noop() -> None:
    return None


@ray.remote
def run_true() -> int:
    return subprocess.run(["true"], check=True).returncode


def main() -> None:
    cfg = read_cfg()
    ray.init(num_cpus=cfg.get("cpus") or os.cpu_count(), include_dashboard=False,
             log_to_driver=False, configure_logging=False)  # fmt: skip
    try:
        result = timed(
            lambda n: ray.get([noop.remote() for _ in range(n)]),
            lambda: ray.get(noop.remote()),
            lambda n: ray.get([run_true.remote() for _ in range(n)]),
            cfg,
        )
        result["version"] = ray.__version__
        result["num_cpus"] = cfg.get("cpus") or os.cpu_count()
        write(result)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
