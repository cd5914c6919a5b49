"""A job where it cannot reach the fleet's files: its own user, mount and PID namespaces.

``corral worker --sandbox on`` (``auto``: when the machine allows it; ``corral up``'s workers
use ``auto``) starts each attempt under util-linux ``unshare``, with no privilege:

- a user namespace in which it may mount, then a second one mapping it back to the
  worker's own uid and gid, so that it runs as before (``id`` says the same) but holds no
  capability over the first one's mounts and cannot undo them;
- a mount namespace in which the worker's data directory (its journal, the other attempts'
  directories, a certificate key) and every ``sandbox_hide`` path (``corral up``: its whole
  data directory, with the coordinator's database and ``admin.key``) are covered by an empty
  tmpfs, and the attempt's own directory is bound back in its place;
- a PID namespace with its own ``/proc``: it sees and signals only its own processes, and
  when its leader ends the kernel kills whatever it left behind.

What it still shares: every other file the worker's user may read or write, the network,
and the machine's CPU and memory (docs/SECURITY.md). With ``--run-as-users`` (as root) the
attempt runs as its own uid inside the same namespaces.

The wrapper is a few ``exec``\\ s, not a process that stays: ``unshare --fork`` leads the
attempt's process group, as the shell alone did, so stopping, adopting and reaping an
attempt are unchanged.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["Sandbox", "SandboxUnavailable", "available", "wrap"]

# Run by the outer namespace's root (the worker's uid, mapped): cover each hidden directory,
# bind the attempt's directory back through a descriptor opened before (its path is covered
# by then; --no-canonicalize keeps mount from resolving the descriptor to that path), go
# there, and run the attempt mapped back to the worker's uid. Arguments, never spliced in:
# attempt dir, cwd, uid, gid, the hidden directories, "--", the attempt's argv.
_SCRIPT = """a=$1 d=$2 u=$3 g=$4; shift 4
if [ -n "$a" ]; then exec 3<"$a" || exit 125; fi
while [ "$1" != -- ]; do
  mount -t tmpfs -o mode=0755,size=64k corral-hidden "$1" || exit 125; shift
done
shift
if [ -n "$a" ]; then
  { mkdir -p "$a" && mount --no-canonicalize --bind /proc/self/fd/3 "$a" && exec 3<&-; } || exit 125
fi
cd "$d" || exit 125
exec unshare --user --map-user="$u" --map-group="$g" -- "$@"
"""
_OUTER = ["--user", "--map-root-user", "--mount", "--propagation", "private", "--pid",
          "--fork", "--kill-child", "--mount-proc"]  # fmt: skip


class SandboxUnavailable(Exception):
    """This machine does not let an unprivileged process make the namespaces."""


@functools.cache
def _unshare() -> str | None:
    return shutil.which("unshare")


@functools.cache
def available() -> str | None:
    """None if attempts can be sandboxed here; else why not (no ``unshare``, or user
    namespaces are off: ``sysctl kernel.unprivileged_userns_clone``, AppArmor's
    ``kernel.apparmor_restrict_unprivileged_userns``)."""
    unshare = _unshare()
    if unshare is None:
        return "util-linux unshare is not installed"
    with tempfile.TemporaryDirectory(prefix="corral-sandbox-") as spot:
        probe = wrap(["true"], attempt_dir=Path(spot), cwd=Path(spot), hide=[Path(spot)],
                     uid=os.getuid(), gid=os.getgid())  # fmt: skip
        try:
            done = subprocess.run(probe, capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unshare failed: {exc}"
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        return f"unshare cannot make the namespaces here: {said[-1] if said else done.returncode}"
    return None


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The directories to cover, none inside another (covering the outer one hides it)."""
    out: list[Path] = []
    for p in sorted({Path(os.path.realpath(p)) for p in paths}, key=lambda p: len(p.parts)):
        if p.is_dir() and not any(p.is_relative_to(o) for o in out):
            out.append(p)
    return out


def wrap(
    argv: list[str], *, attempt_dir: Path, cwd: Path, hide: Iterable[Path], uid: int, gid: int
) -> list[str]:
    """``argv`` started in the sandbox: ``hide`` covered, ``attempt_dir`` bound back."""
    unshare = _unshare()
    if unshare is None:
        raise SandboxUnavailable("util-linux unshare is not installed")
    real = Path(os.path.realpath(attempt_dir))
    hidden = _outermost(hide)
    bind = str(real) if any(real.is_relative_to(h) for h in hidden) else ""
    return [unshare, *_OUTER, "/bin/sh", "-c", _SCRIPT, "corral-sandbox", bind,
            os.path.realpath(cwd), str(uid), str(gid), *map(str, hidden), "--", *argv]  # fmt: skip


class Sandbox:
    """What this worker's attempts are kept from: its data directory and ``hide``."""

    def __init__(self, work_dir: Path, hide: Iterable[Path] = ()) -> None:
        self.hide = (work_dir, *hide)

    def command(
        self, argv: list[str], *, attempt_dir: Path, cwd: Path, user: int | None
    ) -> list[str]:
        """``argv`` for an attempt (``user``: its uid and group, with --run-as-users)."""
        uid, gid = (user, user) if user is not None else (os.getuid(), os.getgid())
        return wrap(argv, attempt_dir=attempt_dir, cwd=cwd, hide=self.hide, uid=uid, gid=gid)
