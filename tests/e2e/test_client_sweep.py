"""docs/client.md's worked example, run as written: a sweep submitted and gathered with the
blocking Client, on a coordinator and two workers started by corral.local."""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest
import structlog

from corral.cli._logging import Level, configure
from corral.local import LocalFleet

pytest.importorskip("sklearn", reason="the sweep trains with scikit-learn (the examples extra)")

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def _example(name: str) -> str:
    """The ```python block of the doc whose first line is ``# <name>``."""
    for block in re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S):
        if block.startswith(f"# {name}\n"):
            return str(block)
    raise AssertionError(f"docs/client.md has no example {name}")


@pytest.mark.timeout(300)
async def test_the_documented_sweep_runs_on_a_local_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _example("sweep.py")
    # The coordinator runs in this process: keep its log lines out of the output under test.
    configure(Level.ERROR, stream=sys.__stderr__)
    out = io.StringIO()
    try:
        async with LocalFleet(data_dir=tmp_path, workers=2, port=0,
                              worker_log_level="warning") as fleet:  # fmt: skip
            await fleet.wait_ready()
            monkeypatch.setenv("CORRAL_URL", fleet.url)
            monkeypatch.setenv("CORRAL_API_KEY", fleet.admin_key or "")
            # The blocking Client, called inside this test's running loop, as in a notebook.
            with contextlib.redirect_stdout(out):
                exec(compile(code, str(DOC), "exec"), {"__name__": "sweep"})
            async with fleet.client() as client:
                jobs = [j async for j in client.jobs()]
    finally:
        structlog.reset_defaults()
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["hidden", "lr", "state", "accuracy", "loss"]
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 6 and all(r[2] == "succeeded" for r in rows), out.getvalue()
    accuracies = [float(r[3]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[0] > 0.8  # it learned: ten classes, chance is 0.1
    assert len(jobs) == 6 and len({j.worker_id for j in jobs}) == 2  # both workers took work
