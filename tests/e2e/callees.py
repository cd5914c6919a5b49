"""Functions that call jobs in the end-to-end tests run (imported by the worker's warm
interpreters: the tests put this directory on the job's PYTHONPATH)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

LOADED: list[int] = []  # module state: what a task left for the next one


def load_then_count(x: int) -> dict[str, int]:
    LOADED.append(x)
    print(f"task {x} sees {len(LOADED)} loaded")
    return {"x": x, "loaded": len(LOADED), "pid": os.getpid()}


def square(x: int) -> int:
    return x * x


def pid() -> int:
    return os.getpid()


def fail(why: str) -> None:
    print("about to fail")
    raise ValueError(why)


def crash(how: str) -> None:
    print("about to crash", flush=True)
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGSEGV if how == "segv" else signal.SIGKILL)


def wait_for(path: str, then: str = "done") -> str:
    """Until ``path`` exists; writes ``path``.started first, so a test knows it runs."""
    Path(path + ".started").write_text(str(os.getpid()))
    while not os.path.exists(path):
        time.sleep(0.02)
    return then


def not_json() -> object:
    return object()


def listing(path: str) -> list[str]:
    return sorted(os.listdir(path))
