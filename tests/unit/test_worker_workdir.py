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
    AttemptFiles,
    attempt_dir,
    exit_code_path,
    output_path,
    prepare_workdir,
    prune_workdirs,
    read_exit_code,
    result_path,
)


def read_result(path: Path) -> tuple[dict[str, object] | None, str | None]:
    """What the worker makes of ``path`` as an attempt's result.json."""
    workdir = path.parent / "w"
    if not workdir.exists():
        prepare_workdir(workdir)
    result_path(workdir).write_bytes(path.read_bytes())
    with AttemptFiles.open(workdir) as files:
        return files.result()


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


# ---- an isolated attempt's user owns its directory: what it points elsewhere is not read ----


@pytest.fixture
def isolated(tmp_path: Path) -> tuple[Path, AttemptFiles, Path]:
    workdir = tmp_path / "w"
    prepare_workdir(workdir)
    files = AttemptFiles.create(workdir)
    files.owner = os.getuid()  # as after hand_over: the files must be this user's
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": 1}')
    return workdir, files, secret


def test_a_symlinked_result_or_exit_status_is_not_followed(isolated) -> None:
    workdir, files, secret = isolated
    result_path(workdir).symlink_to(secret)
    exit_code_path(workdir).symlink_to(secret)
    result, problem = files.result()
    assert result is None and problem and "ignored" in problem
    assert files.exit_code() is None


def test_a_hard_linked_result_is_refused(isolated) -> None:
    workdir, files, secret = isolated
    os.link(secret, result_path(workdir))
    assert files.result()[0] is None


def test_a_result_of_another_user_is_refused(isolated) -> None:
    workdir, files, _ = isolated
    result_path(workdir).write_text('{"a": 1}')
    assert files.result() == ({"a": 1}, None)
    files.owner = os.getuid() + 1
    assert files.result()[0] is None


def test_a_fifo_for_a_result_does_not_hang_the_worker(isolated) -> None:
    workdir, files, _ = isolated
    os.mkfifo(result_path(workdir))
    assert files.result()[0] is None


def test_the_output_is_read_from_the_file_opened_before_the_job_started(isolated) -> None:
    workdir, files, secret = isolated
    with output_path(workdir).open("a") as fh:
        fh.write("mine\n")
    output_path(workdir).unlink()
    output_path(workdir).symlink_to(secret)
    assert files.output_tail() == "mine"
    reader = files.output_reader()
    assert reader is not None
    try:
        assert os.pread(reader, 100, 0) == b"mine\n"
    finally:
        os.close(reader)


def test_a_swapped_corral_directory_is_not_followed_on_reopening(tmp_path: Path) -> None:
    other = tmp_path / "other"
    prepare_workdir(other)
    result_path(other).write_text('{"secret": 1}')
    workdir = tmp_path / "w"
    workdir.mkdir()
    (workdir / ".corral").symlink_to(other / ".corral")
    with AttemptFiles.open(workdir) as files:
        assert files.result() == (None, None) and files.exit_code() is None
