"""A job's working directory packed for the trip: a .tar.gz of what git would keep.

What ``.gitignore`` files (each applying below its own directory, as git reads them) and a
``.corralignore`` (the same syntax, for what git keeps but a job does not need) exclude is
left out, and always ``.git/``, ``.corral/`` (where the worker keeps an attempt's own files)
and ``__pycache__/``. Symbolic links travel as links (the worker refuses one that points
outside the directory). The archive is the same bytes for the same files (sorted, no owner
names, a fixed gzip header), so its SHA-256 names it: an identical directory is uploaded
once and fetched once per worker.

The archive is written to a temporary file, never held in memory; past ``max_bytes`` of
content it stops and says what is largest, so the user knows what to ignore.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pathspec

from corral.model import InvalidInput

__all__ = ["DEFAULT_MAX_BYTES", "IGNORE_FILES", "Packed", "pack", "packed_files",
           "requirements_of"]  # fmt: skip

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
IGNORE_FILES = (".gitignore", ".corralignore")
ALWAYS_IGNORED = (".git/", ".corral/", "__pycache__/", ".corral-checkpoints/")


@dataclass(frozen=True)
class Packed:
    path: Path  # the .tar.gz, a temporary file: the caller removes it
    digest: str
    size: int  # of the archive
    files: int
    content_bytes: int


@dataclass(frozen=True)
class _Rules:
    base: str  # relative to the root, "" for the root, else ending in "/"
    spec: pathspec.GitIgnoreSpec


def _rules_in(root: Path, rel_dir: str) -> list[_Rules]:
    found = []
    for name in IGNORE_FILES:
        path = root / rel_dir / name
        if path.is_file():
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            found.append(_Rules(rel_dir, pathspec.GitIgnoreSpec.from_lines(lines)))
    return found


_ALWAYS = pathspec.GitIgnoreSpec.from_lines(ALWAYS_IGNORED)


def _ignored(rel: str, is_dir: bool, rules: list[_Rules]) -> bool:
    """The deepest rule that says anything about ``rel`` decides, as in git."""
    name = rel + "/" if is_dir else rel
    if _ALWAYS.match_file(name):
        return True
    for r in reversed(rules):
        verdict = r.spec.check_file(name[len(r.base) :]).include
        if verdict is not None:
            return verdict
    return False


def packed_files(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every path that would be packed (relative, with ``/``), sorted, with its lstat."""

    def walk(rel_dir: str, rules: list[_Rules]) -> Iterator[tuple[str, os.stat_result]]:
        here = rules + _rules_in(root, rel_dir)
        with os.scandir(root / rel_dir if rel_dir else root) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                rel = f"{rel_dir}{entry.name}"
                st = entry.stat(follow_symlinks=False)
                is_dir = stat.S_ISDIR(st.st_mode)
                if _ignored(rel, is_dir, here):
                    continue
                if is_dir:
                    yield rel, st
                    yield from walk(rel + "/", here)
                elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                    yield rel, st

    yield from walk("", [])


def _too_large(root: Path, max_bytes: int) -> InvalidInput:
    sizes: dict[str, int] = {}
    total = 0
    for rel, st in packed_files(root):
        if stat.S_ISREG(st.st_mode):
            top = rel.split("/", 1)[0] + ("/" if "/" in rel else "")
            sizes[top] = sizes.get(top, 0) + st.st_size
            total += st.st_size
    top3 = sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
    largest = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in top3)
    return InvalidInput(
        f"{root} holds {total / 2**20:.1f} MiB to pack, more than the limit of"
        f" {max_bytes / 2**20:.0f} MiB; the largest: {largest}. Name what the job does not"
        " need in a .corralignore (as in .gitignore), or raise the limit",
        field="workdir",
    )


def pack(root: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Packed:
    root = Path(root).resolve()
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory", field="workdir")
    fd, name = tempfile.mkstemp(prefix="corral-workdir-", suffix=".tar.gz")
    path = Path(name)
    files = content = 0
    try:
        with os.fdopen(fd, "wb") as raw, \
                gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:  # fmt: skip
            for rel, st in packed_files(root):
                info = tar.gettarinfo(str(root / rel), arcname=rel)
                if info.islnk():  # a second name of a file: it travels as a file of its own
                    info.type, info.linkname, info.size = tarfile.REGTYPE, "", st.st_size
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    content += info.size
                    files += 1
                    if content > max_bytes:
                        raise _too_large(root, max_bytes)
                    with open(root / rel, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
        return Packed(path, digest.hexdigest(), path.stat().st_size, files, content)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def requirements_of(path: str | Path) -> list[str]:
    """The lines of a requirements file that say something (no blank or comment lines)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}", field="requirements") from None
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]
