"""Checkpoints: ``checkpoint()`` keeps one, ``resume()`` finds the newest.

Under Corral the worker gives each attempt two directories: ``CORRAL_CHECKPOINT_DIR``,
where ``checkpoint()`` leaves each checkpoint whole (written under a hidden name, then
renamed, so the worker never takes half of one) for the worker to store in the coordinator's
blob store; and ``CORRAL_RESUME_DIR``, where the worker put the job's newest stored
checkpoint, from any earlier attempt, before this one started. Without Corral both are
``./.corral-checkpoints``, so a script run by hand resumes from what it kept last time.

A checkpoint is a directory ``step-<step>-<n>`` holding ``meta.json`` (its step, its name,
what it is) and its content: the file or directory given, under its own name, or ``data``
for bytes.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENV_CHECKPOINT_DIR", "ENV_RESUME_DIR", "LOCAL_DIR", "Checkpoint", "checkpoint",
           "resume"]  # fmt: skip

ENV_CHECKPOINT_DIR = "CORRAL_CHECKPOINT_DIR"
ENV_RESUME_DIR = "CORRAL_RESUME_DIR"
LOCAL_DIR = ".corral-checkpoints"
META = "meta.json"
BYTES_NAME = "data"
ENTRY = re.compile(r"^step-(\d+)-(\d+)$")
KEEP_LOCAL = 3  # checkpoints kept on disk when running without Corral


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path  # its content on this disk: the file or directory that was checkpointed
    name: str

    def read_bytes(self) -> bytes:
        if self.path.is_dir():
            raise IsADirectoryError(f"checkpoint of step {self.step} is a directory: {self.path}")
        return self.path.read_bytes()


def _under_corral() -> bool:
    return bool(os.environ.get(ENV_CHECKPOINT_DIR))


def _checkpoint_dir() -> Path:
    return Path(os.environ.get(ENV_CHECKPOINT_DIR) or LOCAL_DIR)


def checkpoint(content: str | os.PathLike[str] | bytes, *, step: int,
               name: str | None = None) -> Path:  # fmt: skip
    """Keep ``content`` (a file, a directory, or bytes) as the checkpoint of ``step``; under
    Corral the worker stores it, and a later attempt of this job ``resume()``s from it.
    Returns where it lies now. The content is copied, so the caller may overwrite its file
    at once."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a whole number, 0 or more, not {step!r}")
    root = _checkpoint_dir()
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{secrets.token_hex(6)}"
    staging.mkdir()
    try:
        if isinstance(content, bytes | bytearray | memoryview):
            payload, form = BYTES_NAME, "bytes"
            (staging / payload).write_bytes(bytes(content))
        else:
            src = Path(content)
            payload = src.name
            if src.is_dir():
                form = "dir"
                shutil.copytree(src, staging / payload, symlinks=False)
            elif src.is_file():
                form = "file"
                shutil.copyfile(src, staging / payload)
            else:
                raise FileNotFoundError(f"nothing to checkpoint at {src}")
        meta = {"step": step, "name": name or payload, "payload": payload, "form": form,
                "created_at": time.time()}  # fmt: skip
        (staging / META).write_text(json.dumps(meta))
        seq = time.time_ns()
        final = root / f"step-{step}-{seq}"
        os.rename(staging, final)  # whole, or not there: the worker takes only renamed ones
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not _under_corral():
        _prune(root)
    return final / payload


def _entries(root: Path) -> list[tuple[int, int, Path]]:
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    found = []
    for n in names:
        if m := ENTRY.match(n):
            found.append((int(m.group(1)), int(m.group(2)), root / n))
    return sorted(found)


def _prune(root: Path) -> None:
    for _, _, old in _entries(root)[:-KEEP_LOCAL]:
        shutil.rmtree(old, ignore_errors=True)


def _read(entry: Path) -> Checkpoint | None:
    try:
        meta = json.loads((entry / META).read_text())
        payload = entry / str(meta["payload"])
        if "/" in str(meta["payload"]) or not payload.exists():
            return None
        return Checkpoint(step=int(meta["step"]), path=payload, name=str(meta.get("name")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resume() -> Checkpoint | None:
    """The newest checkpoint of this job, from any earlier attempt (under Corral), or the
    newest kept in ``./.corral-checkpoints`` (run by hand); None to start from the top.

        ck = corral.sdk.resume()
        start = ck.step + 1 if ck else 0
    """
    if _under_corral():
        restored = os.environ.get(ENV_RESUME_DIR)
        return _read(Path(restored)) if restored and Path(restored, META).is_file() else None
    for _, _, entry in reversed(_entries(_checkpoint_dir())):
        if (found := _read(entry)) is not None:
            return found
    return None
