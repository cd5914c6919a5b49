"""An attempt's working directory: where it runs, and what it leaves behind for the worker.

The job's output goes to ``.corral/output.log`` rather than a pipe, and its exit status to
``.corral/exit_code``, so that a worker started again after a crash can go on shipping the
log and learn how a job it did not start ended (see ``process``). The result the job sets
through ``corral.sdk`` is ``.corral/result.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from corral.protocol import MAX_RESULT_BYTES, result_size, unstorable

__all__ = [
    "attempt_dir",
    "exit_code_path",
    "from_shell_status",
    "output_path",
    "output_tail",
    "prepare_workdir",
    "prune_workdirs",
    "read_exit_code",
    "read_result",
    "result_path",
]

_TAIL_BYTES = 16 * 1024
_TAIL_LINES = 40
_MAX_RESULT_FILE_BYTES = 4 * MAX_RESULT_BYTES  # read no more; what it holds is counted then


def attempt_dir(data_dir: Path, job_id: str, attempt: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", job_id).lstrip(".") or "job"
    return data_dir / "attempts" / f"{safe}-{attempt}"


def output_path(workdir: Path) -> Path:
    return workdir / ".corral" / "output.log"


def result_path(workdir: Path) -> Path:
    return workdir / ".corral" / "result.json"


def exit_code_path(workdir: Path) -> Path:
    return workdir / ".corral" / "exit_code"


def prepare_workdir(workdir: Path) -> None:
    """A fresh, empty directory: leftovers of an earlier try must not look like this one's."""
    if workdir.exists():
        shutil.rmtree(workdir)
    (workdir / ".corral").mkdir(parents=True)


def prune_workdirs(root: Path, *, keep: int, active: set[Path]) -> int:
    """Remove all but the ``keep`` newest attempt directories not in ``active``; returns how
    many went. A persistent worker runs thousands of jobs; their directories must not fill
    the disk. Blocking (rmtree): call it in a thread."""
    try:
        dirs = [d for d in root.iterdir() if d.is_dir() and d not in active]
    except FileNotFoundError:
        return 0
    dirs.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for old in dirs[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return max(0, len(dirs) - keep)


def output_tail(workdir: Path, lines: int = _TAIL_LINES) -> str:
    """The last lines the job printed, for the error of a failed attempt."""
    try:
        with output_path(workdir).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _TAIL_BYTES))
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:])


def read_exit_code(workdir: Path) -> int | None:
    """The exit status the attempt's shell recorded, as a return code (negative: killed by
    that signal); None when there is none to read."""
    try:
        text = exit_code_path(workdir).read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return from_shell_status(int(text)) if text.isascii() and text.isdigit() else None


def from_shell_status(status: int) -> int:
    """A shell's exit status as a return code: a shell says 128+N for a command killed by
    signal N, and cannot tell that from a command that exited 128+N itself; the signal is by
    far the likelier."""
    if 128 < status < 128 + signal.NSIG:
        return -(status - 128)
    return status


def read_result(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(result, problem): a job that exits 0 succeeded even if its result file is broken."""
    try:
        if path.stat().st_size > _MAX_RESULT_FILE_BYTES:
            return None, f"result file larger than {_MAX_RESULT_FILE_BYTES} bytes; ignored"
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"result file unreadable; ignored: {exc}"
    if not isinstance(data, dict):
        return None, "result file does not hold a JSON object; ignored"
    if why := unstorable(data):  # the coordinator would refuse the whole report
        return None, f"result file ignored: {why}"
    if (size := result_size(data)) > MAX_RESULT_BYTES:  # so would it a result this large
        return None, f"result of {size} bytes of JSON ignored: at most {MAX_RESULT_BYTES}"
    return data, None
