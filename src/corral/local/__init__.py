"""A fleet on this machine: the supervisor behind ``corral up``, the benchmarks and the
tests — a coordinator and worker processes, and their teardown."""

from corral.local._procs import ensure_free, free_port
from corral.local.errors import BadSetting, FleetError
from corral.local.fleet import LocalFleet, LocalWorker

__all__ = ["BadSetting", "FleetError", "LocalFleet", "LocalWorker", "ensure_free", "free_port"]
