"""The main job: real training on the bundled digits data, metrics per epoch, a result."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from corral.cli._follow import parse_metric
from corral.examples import digits

pytest.importorskip("sklearn")


def test_training_reports_each_epoch_and_sets_a_result(tmp_path: Path) -> None:
    result_file = tmp_path / "result.json"
    proc = subprocess.run(
        [*digits.command({"hidden": 32, "lr": 0.01, "epochs": 4, "seed": 0}, sys.executable)],
        env={"CORRAL_RESULT_FILE": str(result_file), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    metrics = [m for m in map(parse_metric, proc.stdout.splitlines(keepends=True)) if m]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    # It learns: the loss falls and the accuracy ends far above chance (10 classes).
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[-1]["accuracy"] > 0.8
    result = json.loads(result_file.read_text())
    assert result["hidden"] == 32 and result["lr"] == 0.01 and result["epochs"] == 4
    assert result["accuracy"] == pytest.approx(metrics[-1]["accuracy"], abs=1e-6)
    assert result["loss"] == pytest.approx(metrics[-1]["loss"], abs=1e-6)
