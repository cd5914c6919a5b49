"""The benchmark suite behind ``corral bench``: each scenario starts what it measures on
this machine (a coordinator, workers, simulated workers, a peer system), runs a workload and
returns its figures as a JSON-ready dict. Nothing in Corral imports this package; the CLI and
the scripts in ``bench/`` call it. See docs/PERFORMANCE.md."""

from corral.bench.suite import SCENARIOS, Sizes, run_suite

__all__ = ["SCENARIOS", "Sizes", "run_suite"]
