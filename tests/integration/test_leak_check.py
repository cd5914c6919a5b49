"""The leak check names what a test leaves behind, and gives what is winding down a grace."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import _leaks
import psutil

GRACE = 0.3  # short: these tests wait it out on purpose


def test_a_thread_left_running_is_named(tmp_path: Path) -> None:
    before = _leaks.snapshot(tmp_path)
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="left-running", daemon=True)
    t.start()
    try:
        assert _leaks.leaked(before, tmp_path, GRACE) == ["thread 'left-running'"]
    finally:
        stop.set()
        t.join(5)
    assert _leaks.leaked(before, tmp_path, GRACE) == []


def test_what_ends_within_the_grace_is_no_leak(tmp_path: Path) -> None:
    before = _leaks.snapshot(tmp_path)
    done = threading.Event()
    t = threading.Thread(target=done.wait, args=(0.2,), name="winding-down", daemon=True)
    t.start()
    assert _leaks.leaked(before, tmp_path, grace=3.0) == []
    t.join(5)


def test_a_child_and_an_orphan_are_named_then_killed(tmp_path: Path) -> None:
    before = _leaks.snapshot(tmp_path)
    child = subprocess.Popen(["sleep", "60"])
    # The shell exits at once: its sleep is orphaned, no longer our descendant, but it
    # works in the test's folder.
    out = subprocess.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    orphan = psutil.Process(int(out))
    try:
        left = _leaks.leaked(before, tmp_path, GRACE)
        assert sorted(left) == sorted([f"process {child.pid} (sleep 60)",
                                       f"process {orphan.pid} (sleep 60)"])  # fmt: skip
        _leaks.kill_new(before, tmp_path)
        assert child.wait(5) == -9
        orphan.wait(5)
        assert _leaks.leaked(before, tmp_path, GRACE) == []
    finally:
        child.kill()
        child.wait(5)
        if orphan.is_running():
            orphan.kill()


def test_a_listening_socket_is_named(tmp_path: Path) -> None:
    before = _leaks.snapshot(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        left = _leaks.leaked(before, tmp_path, GRACE)
        assert left == [f"listening socket 127.0.0.1:{port} (pid {psutil.Process().pid})"]
    assert _leaks.leaked(before, tmp_path, GRACE) == []
