"""The test kind's reading of pytest's JUnit XML."""

from __future__ import annotations

import json

from corral.protocol import MAX_RESULT_BYTES
from corral.worker.test_kind import TestKind, junit_result

REPORT = b"""<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="4">
<testcase classname="tests.test_a" name="test_ok" time="0.01"/>
<testcase classname="tests.test_a" name="test_bad" time="0.20">
  <failure message="assert 4 == 5">long traceback</failure></testcase>
<testcase classname="tests.test_a" name="test_skip" time="0"><skipped message="later"/></testcase>
<testcase classname="tests.test_a" name="test_err" time="0">
  <error message="fixture broke"/></testcase>
</testsuite></testsuites>"""


def test_each_outcome_is_counted_and_listed() -> None:
    r = junit_result(REPORT)
    assert (r["passed"], r["failed"], r["skipped"], r["errors"]) == (1, 1, 1, 1)
    assert r["tests"][1] == {"id": "tests.test_a::test_bad", "outcome": "failed",
                             "duration_s": 0.2, "message": "assert 4 == 5"}  # fmt: skip


def test_a_huge_suite_keeps_its_counts_and_a_storable_list() -> None:
    cases = "".join(f'<testcase classname="t" name="test_{i}" time="0"><failure message="'
                    f'{"x" * 400}"/></testcase>' for i in range(20_000))  # fmt: skip
    r = junit_result(f"<testsuite>{cases}</testsuite>".encode())
    assert r["failed"] == 20_000 and len(r["tests"]) + r["tests_cut"] == 20_000
    assert len(json.dumps(r)) < MAX_RESULT_BYTES


def test_pytest_that_did_not_run_fails_the_job() -> None:
    kind = TestKind()
    assert not kind.finish(4, lambda name, limit: None).succeeded
    assert "interrupted" in (kind.finish(2, lambda name, limit: b"<x/>").error or "")
    assert kind.finish(1, lambda name, limit: REPORT).succeeded  # failures are a result
    assert not kind.finish(0, lambda name, limit: b"<not xml").succeeded
