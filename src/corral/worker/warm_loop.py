"""The warm interpreter: ``python -m corral.worker.warm_loop``, started by the worker, runs
call tasks one after another, each target imported once.

It talks to its worker over its own stdin and stdout (the worker's pipes), in frames of a
4-byte big-endian length and a JSON document; as it starts it moves that channel to other
descriptors, so that a task's prints (and any subprocess it starts) go to the attempt's
output file and never into the channel. Hand-written, not multiprocessing.connection: the
worker reads the other end from asyncio, which has no framed pipe of its own, and this side
must import nothing but the standard library and ``corral.sdk`` (which imports nothing else),
so it starts in tens of milliseconds.

Requests: ``{"op": "run", "call": CallSpec, "env", "cwd", "output"}``; answers ``{"ok":
true, "value"}`` or ``{"ok": false, "error"}``. What is loaded at module level (a model, a
data set) stays for the next task: that is the point of keeping the interpreter.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import faulthandler
import json
import os
import pickle
import signal
import struct
import sys
import traceback
from typing import Any

from corral.sdk.train import imported

_HEADER = struct.Struct(">I")
MAX_VALUE_BYTES = 1024 * 1024  # a return value larger than this fails the task
_MAX_ERROR = 8_000
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGKILL when the worker dies, so no call runs on after a worker is killed (a
    worker started again cannot adopt a call; it is retried). Elsewhere the closed channel
    ends it after its task."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the worker died before the line above
        os._exit(1)


def _read(fd: int, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        part = os.read(fd, n - len(buf))
        if not part:
            return None
        buf += part
    return buf


def receive(fd: int) -> Any:
    head = _read(fd, _HEADER.size)
    if head is None:
        return None
    body = _read(fd, _HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def send(fd: int, doc: Any) -> None:
    data = json.dumps(doc, allow_nan=False).encode()
    data = _HEADER.pack(len(data)) + data
    while data:
        data = data[os.write(fd, data) :]


def resolve(call: dict[str, Any]) -> Any:
    """The callable: ``module:qualname`` imported (once: sys.modules keeps it), or unpickled."""
    if call.get("pickled"):
        return pickle.loads(base64.b64decode(call["pickled"]))
    return imported(call["target"])


def _encode(value: Any) -> str:
    try:
        text = json.dumps({"value": value}, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the call returned a value that is not JSON: {exc}") from exc
    if len(text) > MAX_VALUE_BYTES:
        raise ValueError(f"the call returned {len(text)} bytes of JSON; at most {MAX_VALUE_BYTES}")
    return text


@contextlib.contextmanager
def _task_io(output: str, cwd: str, env: dict[str, str], home: str) -> Any:
    """The task's prints go to its attempt's output file; its environment and working
    directory are its own; afterwards the interpreter's own are back."""
    fd = os.open(output, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        os.environ.clear()
        os.environ.update(saved)
        os.chdir(home)


def run_one(req: dict[str, Any], home: str) -> dict[str, Any]:
    call = req["call"]
    with _task_io(req["output"], req["cwd"], req["env"], home):
        try:
            fn = resolve(call)
            value = fn(*call.get("args", []), **call.get("kwargs", {}))
            return {"ok": True, "value": _encode(value)}
        except BaseException as exc:
            tb = exc.__traceback__
            # From the task's own code on: the frame of this loop says nothing to its author.
            tb = tb.tb_next if tb is not None and tb.tb_next is not None else tb
            text = "".join(traceback.format_exception(type(exc), exc, tb))
            with contextlib.suppress(Exception):
                sys.stderr.write(text)
            return {"ok": False, "error": text[-_MAX_ERROR:]}


def main() -> None:
    _die_with_parent()
    faulthandler.enable()  # on fd 2: a crash's stack lands in the task's output
    # The channel moves off 0 and 1; those become /dev/null between tasks.
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    for std in (0, 1):
        os.dup2(null, std)
    os.close(null)
    home = os.getcwd()
    if sys.path and sys.path[0] in ("", home):
        sys.path.pop(0)  # the worker's data directory is not code
    send(wfd, {"ready": True, "pid": os.getpid()})
    while (req := receive(rfd)) is not None:
        send(wfd, run_one(req, home))


if __name__ == "__main__":
    main()
