"""An attempt's working directory: where it is, what the job leaves in it (its result and
exit status), and how old ones are pruned."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from corral.protocol import MAX_NESTING, AttemptReport
from corral.worker.workdir import (
    attempt_dir,
    exit_code_path,
    prepare_workdir,
    prune_workdirs,
    read_exit_code,
    read_result,
)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('{"loss": NaN}', "NaN"),
        ('{"name": "a\\u0000b"}', "NUL"),
        ('{"x": ' + "[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1) + "}", "deep"),
    ],
)
def test_a_result_the_coordinator_would_refuse_is_dropped_not_the_report(
    tmp_path: Path, text: str, why: str
) -> None:
    # The coordinator refuses a report holding such a result with a 422, and a refused
    # report is never sent again: the job's success would be lost with it.
    path = tmp_path / "result.json"
    path.write_text(text)
    result, problem = read_result(path)
    assert result is None and problem and problem.startswith("result file ignored"), why


def test_a_storable_result_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"acc": 0.97, "curve": [[1, 2], [3, 4]], "tags": {"a": "b"}}')
    result, problem = read_result(path)
    assert problem is None
    assert result == {"acc": 0.97, "curve": [[1, 2], [3, 4]], "tags": {"a": "b"}}
    AttemptReport(attempt=1, status="succeeded", exit_code=0, result=result)  # the wire takes it


def test_attempt_dir_is_safe(tmp_path: Path) -> None:
    assert attempt_dir(tmp_path, "../../etc", 1).parent == tmp_path / "attempts"


def test_old_attempt_dirs_are_pruned(tmp_path: Path) -> None:
    root = tmp_path / "attempts"
    dirs = []
    for i in range(6):
        d = attempt_dir(tmp_path, f"j_{i}", 1)
        prepare_workdir(d)
        os.utime(d, (1000 + i, 1000 + i))
        dirs.append(d)
    assert prune_workdirs(root, keep=2, active={dirs[0]}) == 3
    assert sorted(p.name for p in root.iterdir()) == ["j_0-1", "j_4-1", "j_5-1"]
    assert prune_workdirs(tmp_path / "nowhere", keep=2, active=set()) == 0


@pytest.mark.parametrize(
    ("text", "code"),
    [("0\n", 0), ("3\n", 3), ("143\n", -signal.SIGTERM), ("137", -signal.SIGKILL), ("", None),
     ("x1\n", None), ("-1\n", None)],
)  # fmt: skip
def test_the_recorded_exit_status_reads_as_a_return_code(
    tmp_path: Path, text: str, code: int | None
) -> None:
    # The leader shell writes $?: 128+N for a job killed by signal N.
    prepare_workdir(tmp_path)
    exit_code_path(tmp_path).write_text(text)
    assert read_exit_code(tmp_path) == code


def test_no_recorded_exit_status_is_none(tmp_path: Path) -> None:
    assert read_exit_code(tmp_path / "never-ran") is None


def test_a_result_larger_than_the_coordinator_takes_is_ignored_not_sent(tmp_path):
    from corral.protocol import MAX_RESULT_BYTES

    path = tmp_path / "result.json"
    path.write_text(json.dumps({"blob": "x" * MAX_RESULT_BYTES}))
    result, problem = read_result(path)
    assert result is None and problem and "ignored" in problem
    path.write_text(json.dumps({"blob": "x" * 1000}))
    assert read_result(path) == ({"blob": "x" * 1000}, None)
