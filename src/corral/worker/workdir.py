"""An attempt's working directory: where it runs, and what it leaves behind for the worker.

The job's output goes to ``.corral/output.log`` rather than a pipe, and its exit status to
``.corral/exit_code``, so that a worker started again after a crash can go on shipping the
log and learn how a job it did not start ended (see ``process``). The result the job sets
through ``corral.sdk`` is ``.corral/result.json``.

With ``--run-as-users`` the attempt's user owns its directory, and can swap any name in it
(``output.log``, ``result.json``, ``.corral`` itself) for a symlink, a hard link or another
directory at any moment, to have the worker (root) read a file of its choosing as its own.
So the worker reads an attempt only through ``AttemptFiles``: ``.corral`` and the output file
opened before the job starts and held; a file the job writes later opened relative to that
descriptor, never following a link, and read only if it is a plain file of the attempt's
user with one link; a worker started again opens the directory anew the same way.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import stat
from pathlib import Path
from types import TracebackType
from typing import Any

from corral.protocol import MAX_RESULT_BYTES, result_size, unstorable

__all__ = [
    "ARTIFACTS",
    "CHECKPOINTS",
    "CORRAL_DIR",
    "RESUME",
    "AttemptFiles",
    "NotItsOwn",
    "attempt_dir",
    "checkpoint_dir",
    "exit_code_path",
    "from_shell_status",
    "output_path",
    "parse_result",
    "prepare_workdir",
    "prune_workdirs",
    "read_exit_code",
    "result_path",
    "resume_dir",
]

_TAIL_BYTES = 16 * 1024
_TAIL_LINES = 40
_MAX_RESULT_FILE_BYTES = 4 * MAX_RESULT_BYTES  # read no more; what it holds is counted then
_EXIT_CODE_BYTES = 64
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO in a file's place must not hang the worker in open().
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OUTPUT, _RESULT, _EXIT_CODE = "output.log", "result.json", "exit_code"
CORRAL_DIR = ".corral"
# Where the job's corral.sdk.checkpoint() leaves each checkpoint for the worker to store,
# and where the worker puts the one a new attempt resumes from (corral.sdk.resume()).
CHECKPOINTS, RESUME = "checkpoints", "resume"
# What the job leaves here (corral.sdk.context().artifact_dir) is stored when it succeeds.
ARTIFACTS = "artifacts"


def attempt_dir(data_dir: Path, job_id: str, attempt: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.\-]", "_", job_id).lstrip(".") or "job"
    return data_dir / "attempts" / f"{safe}-{attempt}"


def checkpoint_dir(workdir: Path) -> Path:
    return workdir / CORRAL_DIR / CHECKPOINTS


def resume_dir(workdir: Path) -> Path:
    return workdir / CORRAL_DIR / RESUME


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
    # 0700 from the start: nobody else reaches in while the worker prepares it as root.
    workdir.parent.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(mode=0o700)
    (workdir / CORRAL_DIR).mkdir(mode=0o700)
    checkpoint_dir(workdir).mkdir(mode=0o700)
    (workdir / CORRAL_DIR / ARTIFACTS).mkdir(mode=0o700)


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


def read_exit_code(workdir: Path) -> int | None:
    """The exit status the attempt's shell recorded, as a return code (negative: killed by
    that signal); None when there is none to read."""
    with AttemptFiles.open(workdir) as files:
        return files.exit_code()


def from_shell_status(status: int) -> int:
    """A shell's exit status as a return code: a shell says 128+N for a command killed by
    signal N, and cannot tell that from a command that exited 128+N itself; the signal is by
    far the likelier."""
    if 128 < status < 128 + signal.NSIG:
        return -(status - 128)
    return status


def parse_result(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(result, problem): a job that exits 0 succeeded even if its result file is broken."""
    if len(data) > _MAX_RESULT_FILE_BYTES:
        return None, f"result file larger than {_MAX_RESULT_FILE_BYTES} bytes; ignored"
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        return None, f"result file unreadable; ignored: {exc}"
    if not isinstance(doc, dict):
        return None, "result file does not hold a JSON object; ignored"
    if why := unstorable(doc):  # the coordinator would refuse the whole report
        return None, f"result file ignored: {why}"
    if (size := result_size(doc)) > MAX_RESULT_BYTES:  # so would it a result this large
        return None, f"result of {size} bytes of JSON ignored: at most {MAX_RESULT_BYTES}"
    return doc, None


class NotItsOwn(OSError):
    """A name in an attempt's directory that is not a plain file of the attempt's user."""


class AttemptFiles:
    """An attempt's ``.corral`` directory and its output file, held by descriptor (see the
    module's docstring). ``owner``: the uid every file read must belong to; None when the
    attempt runs as the worker's own user, whose files are read as they are."""

    def __init__(self, workdir: Path, corral: int | None, output: int | None,
                 owner: int | None = None) -> None:  # fmt: skip
        self.workdir = workdir
        self.owner = owner
        self._dir = corral
        self._out = output
        self._append: int | None = None

    @classmethod
    def create(cls, workdir: Path) -> AttemptFiles:
        """Before the job starts, while ``workdir`` is still the worker's: an empty output
        file, held open to read and to append (the job's stdout)."""
        corral = os.open(workdir / ".corral", _DIR)
        files = cls(workdir, corral, None)
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            files._append = os.open(_OUTPUT, flags, 0o644, dir_fd=corral)
            files._out = os.open(_OUTPUT, _FILE, dir_fd=corral)
        except BaseException:
            files.close()
            raise
        return files

    @classmethod
    def open(cls, workdir: Path) -> AttemptFiles:
        """A worker started again: ``workdir/.corral`` opened anew, not following a link, held
        to its attempt's user (the owner of ``workdir``, when that is not this worker).
        What cannot be opened so reads as nothing."""
        try:
            top = os.open(workdir, _DIR)
        except OSError:
            return cls(workdir, None, None)
        try:
            uid = os.fstat(top).st_uid
            owner = None if uid == os.geteuid() else uid
            corral = os.open(".corral", _DIR, dir_fd=top)
        except OSError:
            return cls(workdir, None, None, owner)
        finally:
            os.close(top)
        files = cls(workdir, corral, None, owner)
        if owner is not None and os.fstat(corral).st_uid != owner:
            files.close()
            return cls(workdir, None, None, owner)
        try:
            files._out = files._open(_OUTPUT)
        except OSError:
            pass
        return files

    def __enter__(self) -> AttemptFiles:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for fd in (self._dir, self._out, self._append):
            if fd is not None:
                os.close(fd)
        self._dir = self._out = self._append = None

    def appender(self) -> int:
        """The descriptor the job's output goes to; the caller closes it once it has passed it
        on."""
        if self._append is None:
            raise FileNotFoundError(errno.ENOENT, "no output file to append to", _OUTPUT)
        fd, self._append = self._append, None
        return fd

    def say(self, line: str) -> None:
        """A line of the worker's own in the job's output, before the job starts."""
        if self._append is not None:
            os.write(self._append, f"[corral] {line}\n".encode())

    def open_dir(self, name: str) -> int:
        """A directory in ``.corral`` (the caller closes it), not followed if it is a link,
        and, for an isolated attempt, its user's."""
        fd = os.open(name, _DIR, dir_fd=self._need_dir(name))
        if self.owner is not None and os.fstat(fd).st_uid != self.owner:
            os.close(fd)
            raise NotItsOwn(errno.EPERM, "not a directory of the attempt's own", name)
        return fd

    def output_reader(self) -> int | None:
        """A descriptor of its own on the output file (the caller closes it), or None."""
        return None if self._out is None else os.dup(self._out)

    def output_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last lines the job printed, for the error of a failed attempt."""
        if self._out is None:
            return ""
        try:
            end = os.fstat(self._out).st_size
            start = max(0, end - _TAIL_BYTES)
            data = os.pread(self._out, end - start, start)
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").rstrip("\n").splitlines()[-lines:])

    def exit_code(self) -> int | None:
        """What the attempt's shell recorded (see ``read_exit_code``)."""
        try:
            data = self.read(_EXIT_CODE, _EXIT_CODE_BYTES)
        except OSError:
            return None
        text = data.decode("ascii", "replace").strip() if data else ""
        return from_shell_status(int(text)) if text.isascii() and text.isdigit() else None

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        """(result, problem) of ``result.json``, as ``parse_result``; (None, None) if none."""
        try:
            data = self.read(_RESULT, _MAX_RESULT_FILE_BYTES + 1)
        except OSError as exc:
            return None, f"result file unreadable; ignored: {exc}"
        return (None, None) if data is None else parse_result(data)

    def read(self, name: str, limit: int) -> bytes | None:
        """At most ``limit`` bytes of ``name`` in ``.corral``; None when there is none."""
        try:
            fd = self._open(name)
        except FileNotFoundError:
            return None
        try:
            chunks: list[bytes] = []
            left = limit
            while left > 0 and (chunk := os.read(fd, left)):
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def mark(self, name: str) -> None:
        """An empty file ``name`` in ``.corral``, made without following a link."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        os.close(os.open(name, flags, 0o644, dir_fd=self._need_dir(name)))

    def has(self, name: str) -> bool:
        try:
            os.stat(name, dir_fd=self._need_dir(name), follow_symlinks=False)
        except OSError:
            return False
        return True

    def _need_dir(self, name: str) -> int:
        if self._dir is None:
            raise FileNotFoundError(errno.ENOENT, "no .corral directory", name)
        return self._dir

    def _open(self, name: str) -> int:
        """``name`` opened to read, refused unless it is a plain file (and, for an isolated
        attempt, not a link of any kind and its user's, with one link: a hard link to a file
        the worker can read would be as good as a symlink)."""
        flags = _FILE if self.owner is not None else _FILE & ~os.O_NOFOLLOW
        fd = os.open(name, flags, dir_fd=self._need_dir(name))
        try:
            st = os.fstat(fd)
            own = self.owner is None or (st.st_uid == self.owner and st.st_nlink == 1)
            if not stat.S_ISREG(st.st_mode) or not own:
                raise NotItsOwn(errno.EPERM, "not a plain file of the attempt's own", name)
        except BaseException:
            os.close(fd)
            raise
        return fd
