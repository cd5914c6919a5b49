"""What an assignment starts as (its task kind), and how the worker knows its process again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from corral.protocol import JobAssign
from corral.worker import _procs
from corral.worker.kinds import CommandKind, UnknownKind, load_kind


def test_kinds(tmp_path: Path) -> None:
    kind = load_kind("command")
    assert isinstance(kind, CommandKind)
    assign = JobAssign(job_id="j", attempt=1, name="n", command=["echo", "hi"], env={"A": "1"})
    spec = kind.prepare(assign, tmp_path)
    assert (spec.argv, spec.cwd, spec.env) == (["echo", "hi"], tmp_path, {"A": "1"})
    with pytest.raises(UnknownKind, match="no task kind 'nope'"):
        load_kind("nope")
    with pytest.raises(ValueError, match="empty command"):
        kind.prepare(assign.model_copy(update={"command": []}), tmp_path)


def test_reused_pid_is_not_ours() -> None:
    me = os.getpid()
    assert _procs.leader_alive(me, _procs.create_time(me))
    assert not _procs.leader_alive(me, _procs.create_time(me) - 3600)
    assert not _procs.group_is_ours(me, _procs.create_time(me) - 3600)
    assert _procs.signal_group(0, signal.SIGKILL) is False  # never our own group
    assert _procs.signal_group(os.getpgrp(), signal.SIGKILL) is False
