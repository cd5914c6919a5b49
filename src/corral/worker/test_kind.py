"""The ``test`` task kind: pytest on the job's files, each test's outcome its result.

``corral submit --kind test --workdir . -- tests/ -k fast`` runs ``python -m pytest tests/ -k
fast`` in the attempt's directory (the job's environment's ``python`` when it names
requirements, else the worker's interpreter), writing JUnit XML into the attempt's
``.corral``. The job's result is what that file says:
``{"passed", "failed", "skipped", "errors", "tests": [{"id", "outcome", "duration_s",
"message"}…]}``. A test that fails is a result, not a failed job: the run succeeded and says
what failed. pytest itself failing (a usage error, an internal error, interrupted, not
installed: no XML) fails the job.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.protocol import MAX_RESULT_BYTES, JobAssign
from corral.worker.kinds import Finished, LaunchSpec

__all__ = ["TestKind", "junit_result"]

JUNIT = "junit.xml"
_MAX_XML = 16 * 1024 * 1024
_MESSAGE = 500  # characters of a failure's message kept per test
_MAX_TESTS = 2000  # tests listed one by one; the counts cover all
# pytest's exit codes that mean it ran: all passed, some failed, none collected.
_RAN = {0, 1, 5}


def _outcome(case: ET.Element) -> tuple[str, str | None]:
    for tag, outcome in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
        found = case.find(tag)
        if found is not None:
            text = found.get("message") or (found.text or "").strip().splitlines()[-1:] or [""]
            message = text if isinstance(text, str) else text[0]
            return outcome, message[:_MESSAGE] or None
    return "passed", None


def junit_result(data: bytes) -> dict[str, Any]:
    """The result of a JUnit XML report (pytest's), its list cut to stay storable."""
    root = ET.fromstring(data)
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    tests: list[dict[str, Any]] = []
    for case in root.iter("testcase"):
        outcome, message = _outcome(case)
        counts["errors" if outcome == "error" else outcome] += 1
        if len(tests) < _MAX_TESTS:
            name, classname = case.get("name", "?"), case.get("classname", "")
            tests.append({"id": f"{classname}::{name}" if classname else name,
                          "outcome": outcome, "duration_s": float(case.get("time") or 0),
                          "message": message})  # fmt: skip
    result: dict[str, Any] = {**counts, "tests": tests}
    total = sum(counts.values())
    if len(tests) < total:
        result["tests_cut"] = total - len(tests)
    while len(str(result)) > MAX_RESULT_BYTES // 2 and result["tests"]:
        cut = len(result["tests"]) // 2
        result["tests_cut"] = result.get("tests_cut", 0) + len(result["tests"]) - cut
        result["tests"] = result["tests"][:cut]
    return result


class TestKind:
    """pytest, its outcomes as the job's result."""

    name = "test"
    __test__ = False  # not a test class, though named like one

    def prepare(self, assign: JobAssign, workdir: Path) -> LaunchSpec:
        python = "python" if assign.requirements else sys.executable
        junit = workdir / ".corral" / JUNIT
        argv = [python, "-m", "pytest", f"--junitxml={junit}", "-o", "junit_family=xunit1",
                *assign.command]  # fmt: skip
        return LaunchSpec(argv=argv, cwd=workdir, env=dict(assign.env))

    def finish(self, exit_code: int, read: Callable[[str, int], bytes | None]) -> Finished:
        data = read(JUNIT, _MAX_XML + 1) if exit_code in _RAN else None
        if data is None:
            why = {2: "was interrupted", 3: "hit an internal error", 4: "was used wrongly"}
            said = why.get(exit_code, f"exited with code {exit_code}")
            return Finished(False, error=f"pytest {said} and reported no tests")
        if len(data) > _MAX_XML:
            return Finished(False, error=f"pytest's report is larger than {_MAX_XML} bytes")
        try:
            result = junit_result(data)
        except ET.ParseError as exc:
            return Finished(False, error=f"pytest's report cannot be read: {exc}")
        return Finished(True, result=result)
