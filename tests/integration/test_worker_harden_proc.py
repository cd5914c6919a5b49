"""The worker token stays out of reach of the jobs: not in the worker's environment, and
the worker's /proc files closed to other processes of its user."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOKEN = "wt_jobs_must_never_read_this"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")

_PROBE = """
import ctypes, os
from corral.config import harden as _harden
_harden.hide_token_from_jobs()
libc = ctypes.CDLL(None)
with open('/proc/self/environ', 'rb') as fh:
    environ = fh.read()
print(libc.prctl(3, 0, 0, 0, 0), any(n in os.environ for n in _harden.TOKEN_ENVS),
      %r in environ)
"""


@linux_only
@pytest.mark.parametrize("names", [["CORRAL_WORKER__TOKEN"], ["CORRAL_WORKER_TOKEN"],
                                   ["CORRAL_WORKER__TOKEN", "CORRAL_WORKER_TOKEN"]])  # fmt: skip
def test_start_up_makes_the_process_undumpable_and_drops_the_token(names: list[str]) -> None:
    # The token's name, and its deprecated name that is still read.
    env = {**os.environ, **dict.fromkeys(names, TOKEN)}
    out = subprocess.run([sys.executable, "-c", _PROBE % TOKEN.encode()], env=env,
                         capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    assert out.stdout.split() == ["0", "False", "False"], out.stderr


@linux_only
def test_a_running_worker_does_not_show_its_token_in_proc(tmp_path: Path) -> None:
    # What a job would try: read the worker's environment. Root may read any /proc file, so
    # the token must not be there at all; anyone else must not even be let in.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"  # nobody answers: it retries for ever
    env = {**os.environ, "CORRAL_WORKER__TOKEN": TOKEN}
    worker = subprocess.Popen(
        [sys.executable, "-m", "corral.cli", "worker", "--orchestrator-url", url,
         "--data-dir", str(tmp_path / "w")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert worker.poll() is None, "the worker exited"
            try:
                seen = Path(f"/proc/{worker.pid}/environ").read_bytes()
            except PermissionError:
                break  # undumpable, and we are not root: that is the point
            if TOKEN.encode() not in seen:
                break
            assert time.monotonic() < deadline, "the token is still in /proc/<worker>/environ"
            time.sleep(0.05)
    finally:
        worker.kill()
        worker.wait()
