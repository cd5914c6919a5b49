"""Keep a Corral process's secrets out of reach of the jobs that run beside it.

A job runs as the same user as its worker (and, under ``corral up``, as its coordinator),
and Linux lets a process read the environment and memory of any other process of its user:
``cat /proc/$PPID/environ`` (the worker is a job's grandparent, behind the shell that records
its exit status) would print the worker's token, and the coordinator's the bootstrap key.
The jobs' own environment is already scrubbed (``worker.environ.build_env``); this closes
the way round it: each process that holds a secret becomes undumpable and forgets the
variables it read the secret from, once its settings hold it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

__all__ = [
    "BOOTSTRAP_KEY_ENVS",
    "PARENT_ENV",
    "TOKEN_ENVS",
    "follow_parent",
    "forget_env",
    "hide_secrets",
    "hide_token_from_jobs",
    "make_undumpable",
]

# The variables of a secret, and their names before CORRAL_<SECTION>__<KEY> (still read).
TOKEN_ENVS = ("CORRAL_WORKER__TOKEN", "CORRAL_WORKER_TOKEN", "CORRAL_WORKER__API_KEY",
              "CORRAL_WORKER__REGISTRATION_TOKEN")  # fmt: skip
BOOTSTRAP_KEY_ENVS = ("CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY", "CORRAL_BOOTSTRAP_ADMIN_KEY")
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_PDEATHSIG = 1


def hide_secrets(names: tuple[str, ...]) -> None:
    """Call once the settings hold the secrets, before any job starts."""
    make_undumpable()
    for name in names:
        forget_env(name)


def hide_token_from_jobs() -> None:
    """The worker's: its token."""
    hide_secrets(TOKEN_ENVS)


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    libc = _libc()
    prctl = getattr(libc, "prctl", None) if libc is not None else None
    if prctl is not None:
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                          ctypes.c_ulong]  # fmt: skip
        prctl.restype = ctypes.c_int
    return prctl


# Set by a local fleet (``corral up``, ``corral server --local-workers``) in the environment
# of each coordinator and worker it starts: the supervisor that child must not outlive.
PARENT_ENV = "CORRAL_LOCAL_PARENT"


def follow_parent() -> None:
    """In a process a local fleet started: SIGTERM to ourselves when its supervisor goes,
    however it went. A supervisor killed outright (SIGKILL, the OOM killer) cannot stop its
    children, which sit in process groups of their own; they would run on, holding the port
    and the data directory, with nobody to stop them. ``prctl(PR_SET_PDEATHSIG)``; nothing
    where there is no prctl."""
    parent = os.environ.pop(PARENT_ENV, None)
    prctl = _prctl() if parent and parent.isdigit() else None
    if prctl is None or prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return
    if os.getppid() != int(parent or 0):  # it went before we asked
        os.kill(os.getpid(), signal.SIGTERM)


def make_undumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)``: same-user processes may no longer read this one's
    /proc/<pid>/environ or memory, nor ptrace it; its files under /proc belong to root. It
    also means no core dump, and a debugger (py-spy) needs root. Inherited by the children
    forked here but reset by exec, so jobs are not affected.

    False, and nothing else, where there is no prctl (not Linux, no libc).
    """
    prctl = _prctl()
    return prctl is not None and bool(prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)


def forget_env(name: str) -> None:
    """Remove ``name`` from this process's environment, and blank its value where
    /proc/<pid>/environ shows it: that file shows the environment the process started with,
    which unsetenv() leaves in place. Without this, anyone allowed to read the file (root,
    or everyone where prctl is missing) would still find the value there."""
    if name not in os.environ:
        return
    libc = _libc()
    if libc is not None and sys.platform.startswith("linux"):
        try:
            _blank(libc, name.encode())
        except (ValueError, AttributeError, OSError):
            pass  # the variable still leaves os.environ below
    os.environ.pop(name, None)


def _blank(libc: ctypes.CDLL, name: bytes) -> None:
    environ = ctypes.POINTER(ctypes.c_void_p).in_dll(libc, "environ")
    prefix = name + b"="
    i = 0
    while (addr := environ[i]) is not None:
        entry = ctypes.string_at(addr)
        if entry.startswith(prefix):
            ctypes.memset(addr + len(prefix), 0, len(entry) - len(prefix))
        i += 1
