"""The worker agent: registers with a coordinator, runs the jobs it is given, reports back."""

from corral.worker.agent import Agent, run_worker
from corral.worker.config import WorkerSettings, parse_labels

__all__ = ["Agent", "WorkerSettings", "parse_labels", "run_worker"]
