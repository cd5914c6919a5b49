"""Task kinds: how a job.assign becomes a process to start.

A kind is found by name through the ``corral.task_kinds`` entry points, so a new kind is a
new module (in any installed package), not an edit of the worker.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from corral.protocol import JobAssign

__all__ = [
    "ENTRY_POINT_GROUP",
    "BenchmarkKind",
    "CallKind",
    "CommandKind",
    "Finished",
    "LaunchSpec",
    "TaskKind",
    "TrainKind",
    "UnknownKind",
    "load_kind",
]

ENTRY_POINT_GROUP = "corral.task_kinds"


@dataclass(frozen=True)
class LaunchSpec:
    """What to start; ``environ.build_env`` adds the worker's allow-list, Corral's vars and GPUs."""

    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Finished:
    """What a kind makes of its process's end: whether the job succeeded, its result, or
    why it failed."""

    succeeded: bool
    result: dict[str, Any] | None = None
    error: str | None = None


@runtime_checkable
class TaskKind(Protocol):
    """``prepare`` says what to start. A kind may also have ``finish(exit_code, read) ->
    Finished``, called when its process has exited on its own: ``read(name, limit)`` reads a
    file the process left in the attempt's ``.corral`` (None if there is none), and what it
    returns is the attempt's outcome (the ``test`` kind's JUnit XML as the result)."""

    name: str

    def prepare(self, assign: JobAssign, workdir: Path) -> LaunchSpec:
        """Turn the assignment into a launch; raise ValueError if it cannot run."""
        ...


class UnknownKind(Exception):
    """No installed plugin provides this task kind."""


class CommandKind:
    """Runs ``command`` as given, in the attempt's own working directory."""

    name = "command"

    def prepare(self, assign: JobAssign, workdir: Path) -> LaunchSpec:
        if not assign.command or not assign.command[0]:
            raise ValueError("the job has an empty command")
        return LaunchSpec(argv=list(assign.command), cwd=workdir, env=dict(assign.env))


class CallKind:
    """Runs ``call``, a Python callable, in one of the worker's warm interpreters (``warm``):
    ``prepare`` says how to start one; an idle one of the same family is used instead.
    A kind with ``warm = True`` is run this way; every other kind as a process of its own."""

    name = "call"
    warm = True

    def prepare(self, assign: JobAssign, workdir: Path) -> LaunchSpec:
        if assign.call is None:
            raise ValueError('a job of kind "call" came without its call')
        # -u: a task's prints reach its log as they happen, as a command's do.
        argv = [sys.executable, "-u", "-m", "corral.worker.warm_loop"]
        return LaunchSpec(argv=argv, cwd=workdir, env=dict(assign.env))


class TrainKind:
    """A Python function called with the job's config: ``corral submit --kind train --entry
    mod:fn --config cfg.json`` (``command`` is ``[mod:fn]``, the config its ``params``), run
    by ``corral.sdk.train`` in the job's interpreter (its requirements' environment)."""

    name = "train"

    def prepare(self, assign: JobAssign, workdir: Path) -> LaunchSpec:
        if len(assign.command) != 1 or ":" not in assign.command[0]:
            raise ValueError("a train job names one module:function (--entry)")
        python = "python" if assign.requirements else sys.executable
        argv = [python, "-u", "-m", "corral.sdk.train", assign.command[0]]
        return LaunchSpec(argv=argv, cwd=workdir, env=dict(assign.env))


class BenchmarkKind:
    """A model's latency and throughput over batch sizes and a precision, from the job's
    config (its params), run by ``corral.sdk.benchmark`` in the job's interpreter."""

    name = "benchmark"

    def prepare(self, assign: JobAssign, workdir: Path) -> LaunchSpec:
        python = "python" if assign.requirements else sys.executable
        argv = [python, "-u", "-m", "corral.sdk.benchmark"]
        return LaunchSpec(argv=argv, cwd=workdir, env=dict(assign.env))


def _builtin() -> dict[str, type[TaskKind]]:
    """Found even when the package metadata is stale (a source checkout not re-installed)."""
    from corral.worker.test_kind import TestKind

    return {"command": CommandKind, "call": CallKind, "test": TestKind, "train": TrainKind,
            "benchmark": BenchmarkKind}  # fmt: skip


@cache
def load_kind(name: str) -> TaskKind:
    """The kind registered as ``name``; raises UnknownKind."""
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            factory = ep.load()
        except Exception as exc:
            raise UnknownKind(f"task kind {name!r} failed to load ({ep.value}): {exc}") from exc
        kind = factory()
        if not isinstance(kind, TaskKind):
            raise UnknownKind(f"task kind {name!r} ({ep.value}) has no prepare()")
        return kind
    if name in (builtin := _builtin()):
        return builtin[name]()
    raise UnknownKind(f"no task kind {name!r} is installed on this worker")
