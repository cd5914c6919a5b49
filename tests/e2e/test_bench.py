"""The benchmarks still run: a tiny run of each, so a change elsewhere cannot break them
unnoticed (their figures are measured by hand; see docs/PERFORMANCE.md, docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def test_dispatch_bench_runs(tmp_path):
    out = tmp_path / "d.json"
    r = _run(["bench/dispatch.py", "--jobs", "10", "--workers", "1", "--slots", "2",
              "--idle-jobs", "2", "--out", str(out)], 120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(out.read_text())


def test_chaos_bench_runs_and_loses_nothing(tmp_path):
    out = tmp_path / "c.json"
    args = ["--jobs", "12", "--workers", "2", "--seed", "7", "--max-seconds", "60",
            "--drain-seconds", "20", "--submit-seconds", "2", "--flood-jobs", "10",
            "--faults", "kill,cut,restart,freeze,disk-full,flood", "--out", str(out)]  # fmt: skip
    r = _run(["bench/chaos.py", *args], 150)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["lost"] == [] and result["accepted_twice"] == []
    assert result["per_fault"] and sum(result["faults"].values()) > 0


def test_logs_bench_runs(tmp_path):
    out = tmp_path / "l.json"
    r = _run(["bench/logs.py", "--log-mb", "2", "--readers", "1,2", "--out", str(out)], 120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [row["readers"] for row in json.loads(out.read_text())["reads"]] == [1, 2]
