"""Worker states as in SimpleTuner's guide, and worker types."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from enum import StrEnum

from corral.model.errors import IllegalTransition, PermissionDenied


class WorkerStatus(StrEnum):
    CONNECTING = "connecting"  # registered, stream not open yet
    IDLE = "idle"  # connected, taking work
    BUSY = "busy"  # shown, never stored: idle and holding attempts
    DRAINING = "draining"
    OFFLINE = "offline"
    CONSTRAINED = "constrained"  # shown, never stored: idle, but it says it takes no work
    PAUSED = "paused"  # shown, never stored: idle, but its admin paused it


class WorkerType(StrEnum):
    EPHEMERAL = "ephemeral"  # exits after one job
    PERSISTENT = "persistent"


_C, _I, _D, _O = (
    WorkerStatus.CONNECTING,
    WorkerStatus.IDLE,
    WorkerStatus.DRAINING,
    WorkerStatus.OFFLINE,
)
# What is stored. BUSY is not: a connected worker holding attempts is shown busy (see
# ``shown_status``), so that a job starting or ending never has to rewrite its worker's row.
WORKER_TRANSITIONS: dict[tuple[WorkerStatus, WorkerStatus], str] = {
    (_O, _C): "registered",
    (_C, _C): "registered again",
    (_I, _C): "registered again",
    (_C, _I): "stream open",
    (_C, _D): "drain asked",
    (_I, _D): "drain asked",
    (_C, _O): "left or timed out",
    (_I, _O): "left or timed out",
    (_D, _O): "left or timed out",
}


def check_worker_transition(frm: WorkerStatus, to: WorkerStatus) -> None:
    if (frm, to) not in WORKER_TRANSITIONS:
        raise IllegalTransition(f"worker cannot go from {frm} to {to}")


def shown_status(
    stored: WorkerStatus, running: int, constrained: bool = False, paused: bool = False
) -> WorkerStatus:
    """What a person sees: an idle worker that takes no work is paused (its admin said so)
    or constrained (it said so); one holding attempts is busy."""
    if stored is not WorkerStatus.IDLE:
        return stored
    if paused:
        return WorkerStatus.PAUSED
    if constrained:
        return WorkerStatus.CONSTRAINED
    return WorkerStatus.BUSY if running else stored


def labels_in_effect(
    admin: Mapping[str, str], allowed: Sequence[str], said: Mapping[str, str]
) -> dict[str, str]:
    """The labels in effect for a worker that says ``said``: its admin's, and those of
    ``said`` whose keys match ``allowed``. A label its admin set, said with another value,
    or one it may not set, is refused: a worker cannot make itself the target of jobs (and
    their secrets) meant for others."""
    own: dict[str, str] = {}
    for key, value in said.items():
        if key in admin:
            if admin[key] != value:
                raise PermissionDenied(
                    f"label {key!r} is {admin[key]!r}, set by the worker's admin",
                    field=f"labels.{key}",
                )
        elif any(fnmatch.fnmatchcase(key, pattern) for pattern in allowed):
            own[key] = value
        else:
            raise PermissionDenied(
                f"label {key!r} is not one the worker's admin allows it to set"
                " (corral workers create --allow-label)",
                field=f"labels.{key}",
            )
    return {**own, **admin}
