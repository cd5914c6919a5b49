"""What a job's own code imports to talk to Corral.

The worker runs each attempt with ``CORRAL_JOB_ID``, ``CORRAL_ATTEMPT`` and
``CORRAL_RESULT_FILE`` in its environment. Metrics travel in the job's own output (one
``corral.metric {...}`` line each), so they need no connection and show in the logs;
the result travels as a JSON file the worker reads when the process exits 0; checkpoints
(``checkpoint``, ``resume``) through two directories the worker watches and fills
(``corral.sdk._checkpoint``). ``context()`` says who and where the job is.

Without Corral every call still works: metrics are printed, checkpoints kept in
``./.corral-checkpoints``, so a script stays runnable by hand.

Standard library only: a job's environment may have nothing but corral installed.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corral.sdk._checkpoint import (
    ENV_CHECKPOINT_DIR,
    ENV_RESUME_DIR,
    Checkpoint,
    checkpoint,
    resume,
)

__all__ = [
    "ENV_ARTIFACT_DIR",
    "ENV_ATTEMPT",
    "ENV_CHECKPOINT_DIR",
    "ENV_JOB_ID",
    "ENV_PARAMS",
    "ENV_RESULT_FILE",
    "ENV_RESUME_DIR",
    "METRIC_PREFIX",
    "Checkpoint",
    "Context",
    "attempt",
    "checkpoint",
    "context",
    "job_id",
    "last_metrics",
    "report",
    "resume",
    "set_result",
]

ENV_JOB_ID = "CORRAL_JOB_ID"
ENV_ATTEMPT = "CORRAL_ATTEMPT"
ENV_RESULT_FILE = "CORRAL_RESULT_FILE"
METRIC_PREFIX = "corral.metric "

_last: dict[str, Any] = {}


def job_id() -> str | None:
    """The job this process runs for, or None outside Corral."""
    return os.environ.get(ENV_JOB_ID) or None


def attempt() -> int | None:
    """The attempt number (1 for the first run, more after a retry), or None outside Corral."""
    raw = os.environ.get(ENV_ATTEMPT)
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


ENV_PARAMS = "CORRAL_PARAMS"  # the job's parameters as JSON (a train job's config)
ENV_ARTIFACT_DIR = "CORRAL_ARTIFACT_DIR"  # what the job leaves there is kept if it succeeds


@dataclass(frozen=True)
class Context:
    """Who and where this process is: ``job_id`` and ``attempt`` None outside Corral; a
    gang member's ``rank`` and ``world_size`` (0 and 1 otherwise)."""

    job_id: str | None
    attempt: int | None
    rank: int
    world_size: int
    params: dict[str, Any] = field(default_factory=dict)
    scratch_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    checkpoint_dir: Path = field(default_factory=lambda: Path(".corral-checkpoints"))
    # Files the job writes here are stored as its artifacts once it has succeeded (by hand:
    # ./artifacts, kept where it is).
    artifact_dir: Path = field(default_factory=lambda: Path("artifacts"))


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name) or default)
    except ValueError:
        return default


def context() -> Context:
    try:
        params = json.loads(os.environ.get(ENV_PARAMS) or "{}")
    except ValueError:
        params = {}
    return Context(
        job_id=job_id(),
        attempt=attempt(),
        rank=_int_env("RANK", 0),
        world_size=_int_env("WORLD_SIZE", 1),
        params=params if isinstance(params, dict) else {},
        scratch_dir=Path(os.environ.get("TMPDIR") or tempfile.gettempdir()),
        checkpoint_dir=Path(os.environ.get(ENV_CHECKPOINT_DIR) or ".corral-checkpoints"),
        artifact_dir=Path(os.environ.get(ENV_ARTIFACT_DIR) or "artifacts"),
    )


def report(step: int | None = None, **metrics: Any) -> None:
    """Print one ``corral.metric {...}`` line to stdout and remember the values.

    Non-finite floats (a diverged loss) become null so that every line stays strict JSON;
    numpy scalars and other number-likes become plain numbers.
    """
    line: dict[str, Any] = {}
    if step is not None:
        line["step"] = int(step)
    line.update({name: _jsonable(value) for name, value in metrics.items()})
    _last.update(line)
    print(METRIC_PREFIX + json.dumps(line, separators=(",", ":")), file=sys.stdout, flush=True)


def last_metrics() -> dict[str, Any]:
    """The latest value of every metric reported by this process."""
    return dict(_last)


def set_result(data: dict[str, Any]) -> None:
    """Save the job's result; the worker sends it when the process exits 0.

    Written to a temporary file and renamed, so the worker never reads half a result even
    if the process is killed mid-write. Calling it again replaces the result.
    """
    if not isinstance(data, dict):
        raise TypeError(f"a result is a dict, not {type(data).__name__}")
    path = os.environ.get(ENV_RESULT_FILE)
    if not path:
        warnings.warn(
            f"not running under Corral ({ENV_RESULT_FILE} is not set): result not saved",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    target = Path(path)
    text = json.dumps(_jsonable(data), separators=(",", ":"), allow_nan=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".result-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    """Turn what ML code tends to hold (numpy scalars and arrays, tuples, NaN) into JSON."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    for method in ("tolist", "item"):  # numpy / torch without importing them
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                return _jsonable(convert())
            except (TypeError, ValueError):
                pass
    if hasattr(value, "__float__"):
        try:
            return _jsonable(float(value))
        except (TypeError, ValueError):
            pass
    return str(value)
