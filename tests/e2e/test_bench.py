"""The benchmarks still run: a tiny run of each, so a change elsewhere cannot break them
unnoticed (their figures are measured by hand; see docs/PERFORMANCE.md, docs/RELIABILITY.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

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


# Each scenario of `corral bench` at its smallest; the peers run when installed (the `bench`
# extra), else they must say they were skipped.
TINY = ["--jobs", "10", "--workers", "1", "--slots", "2", "--roundtrips", "3", "--spawns", "20",
        "--requests", "50", "--calls", "10", "--kills", "1", "--fleet-size", "50",
        "--fleet-steady", "3", "--fleet-roundtrips", "3", "--peer-tasks", "20",
        "--peer-process-tasks", "5"]  # fmt: skip


@pytest.mark.timeout(240)
@pytest.mark.parametrize("scenarios", [["floors", "dispatch", "roundtrip", "calls"], ["kill"],
                                       ["fleet"]])  # fmt: skip
def test_corral_bench_scenarios_run(tmp_path, scenarios):
    out = tmp_path / "b.json"
    r = _run(["-m", "corral.cli", "bench", *scenarios, *TINY, "--out", str(out)], 220)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["scenarios"]) == scenarios
    for name, figures in result["scenarios"].items():
        assert "error" not in figures, (name, figures)
    assert "corral bench" in r.stdout  # the table
    if "fleet" in scenarios:
        fleet = result["scenarios"]["fleet"]
        assert fleet["connected_after_roundtrips"] == 50
        assert fleet["roundtrip_states"] == {"succeeded": 3}
        assert fleet["simulated"]["errors"] == 0
    if "kill" in scenarios:
        (row,) = result["scenarios"]["kill"]["kills"]
        assert row["runs_again_on"] != row["victim"]
    if "calls" in scenarios and "skipped" in result["scenarios"]["calls"]:
        assert "calls: skipped" in r.stderr


@pytest.mark.timeout(240)
def test_corral_bench_compares_with_peers_or_says_why_not(tmp_path):
    out = tmp_path / "p.json"
    r = _run(["-m", "corral.cli", "bench", "dispatch", *TINY, "--compare", "ray,celery,nope",
              "--out", str(out)], 220)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    peers = json.loads(out.read_text())["peers"]
    assert "unknown peer" in peers["nope"]["skipped"]
    for name in ("ray", "celery"):
        assert "skipped" in peers[name] or peers[name]["noop_tasks_per_s"] > 0, peers[name]


def test_corral_bench_refuses_an_unknown_scenario():
    r = _run(["-m", "corral.cli", "bench", "nonesuch"], 60)
    assert r.returncode == 2 and "unknown scenario 'nonesuch'" in r.stderr


def test_fleet_bench_runs(tmp_path):
    out = tmp_path / "f.json"
    r = _run(["bench/fleet.py", "--size", "20", "--steady", "2", "--roundtrips", "2",
              "--out", str(out)], 120)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert json.loads(out.read_text())["connected_after_roundtrips"] == 20


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


def test_dashboard_bench_runs(tmp_path):
    out = tmp_path / "d.json"
    r = _run(["bench/dashboard.py", "--workers", "3", "--jobs", "60", "--rounds", "2",
              "--out", str(out)], 120)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    pages = json.loads(out.read_text())["pages"]
    assert {"/ui/jobs", "/ui/fleet", "/metrics"} <= set(pages)
    assert all(p["bytes"] > 0 and p["p50_ms"] > 0 for p in pages.values())


def test_logs_bench_runs(tmp_path):
    out = tmp_path / "l.json"
    r = _run(["bench/logs.py", "--log-mb", "2", "--readers", "1,2", "--out", str(out)], 120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [row["readers"] for row in json.loads(out.read_text())["reads"]] == [1, 2]


async def test_a_simulated_worker_declines_a_job_it_is_offered(tmp_path):
    """The fleet generator's workers speak the real protocol: offered a job, one says it
    cannot run it, and the coordinator ends that attempt saying why (with no retries left,
    the job fails with the worker's words) instead of waiting for a lease to run out."""
    from corral.bench.fleet import _start_generators, _sum
    from corral.local import LocalFleet

    async with LocalFleet(data_dir=tmp_path, workers=0, port=0) as lf:
        assert lf.admin_key is not None
        gens = await _start_generators(lf.url, lf.admin_key, 1, 1, 1)
        try:
            async with asyncio.timeout(60), lf.client() as client:
                # Counters a child process prints: polled, within the timeout above.
                while _sum(gens)["streaming"] < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                job = await client.submit(["true"], retries=0)
                while _sum(gens)["declined"] < 1:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                ended = await client.wait(job.id, timeout=30)
                assert (
                    ended.state == "failed" and ended.error == "simulated worker: it runs no jobs"
                )
                kinds = [(e.kind, e.reason) async for e in client.events(job.id)]
                assert kinds[-1] == ("job.failed", "declined"), kinds
        finally:
            for g in gens:
                await g.stop()
    assert _sum(gens)["errors"] == 0, _sum(gens)["last_error"]
