"""What a job leaves in its result file, and what of it the worker reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.protocol import MAX_NESTING, AttemptReport
from corral.worker.runner import _read_result


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
    result, problem = _read_result(path)
    assert result is None and problem and problem.startswith("result file ignored"), why


def test_a_storable_result_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_text('{"acc": 0.97, "curve": [[1, 2], [3, 4]], "tags": {"a": "b"}}')
    result, problem = _read_result(path)
    assert problem is None
    assert result == {"acc": 0.97, "curve": [[1, 2], [3, 4]], "tags": {"a": "b"}}
    AttemptReport(attempt=1, status="succeeded", exit_code=0, result=result)  # the wire takes it
