"""Is this worker's own disk failing it? Then an attempt is not the job's to fail."""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

__all__ = ["MIN_FREE_BYTES", "disk_error", "low_space", "room"]

# Below this much free space in its data directory a worker takes no new work: a job's
# working directory, its output and the journal all live there.
MIN_FREE_BYTES = 16 * 1024 * 1024
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def disk_error(exc: BaseException) -> str | None:
    """Why ``exc`` is this machine's disk failing (full, read-only, broken), or None."""
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return f"its data directory cannot be written: {os.strerror(exc.errno or 0)}"
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        if "full" in text or "disk i/o" in text or "readonly" in text:
            return f"its journal cannot be written: {exc}"
    return None


def low_space(data_dir: Path) -> str | None:
    """Why the data directory is too full to start anything in, or None (one statvfs)."""
    try:
        free = shutil.disk_usage(data_dir).free
    except OSError as exc:
        return f"its data directory cannot be read: {exc}"
    if free < MIN_FREE_BYTES:
        return f"its data directory has {free // 1024} KiB free"
    return None


def room(data_dir: Path) -> str | None:
    """None when the data directory can take work again; else why not. Blocking (a
    thread's work); the journal's own probe is the caller's, on the journal's thread."""
    try:
        if why := low_space(data_dir):
            return why
        fd, name = tempfile.mkstemp(prefix=".room-", dir=data_dir)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(name)
    except OSError as exc:
        return disk_error(exc) or f"its data directory cannot be written: {exc}"
    return None
