"""Each example in examples/ runs, on a real fleet, as its docstring says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PY = sys.executable
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _torch() -> None:
    if os.environ.get("CORRAL_REQUIRE_TORCH") != "1":
        pytest.importorskip("torch")
    pytest.importorskip("safetensors")


def test_the_resumable_training_script_resumes_by_hand_and_runs_as_a_job(fleet, tmp_path):
    _torch()
    script = str(EXAMPLES / "train_resumable.py")
    first = subprocess.run([PY, script, "--epochs", "3"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, check=True)  # fmt: skip
    assert "resuming" not in first.stdout
    again = subprocess.run([PY, script, "--epochs", "5"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, check=True)  # fmt: skip
    assert "resuming at epoch 3" in again.stdout
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    job = fleet.calls.submit([PY, "train_resumable.py", "--epochs", "4"],
                             workdir=EXAMPLES)  # fmt: skip
    done = fleet.wait_state(job.id, {"succeeded", "failed"}, seconds=300)
    assert done["state"] == "succeeded", done["error"]
    assert done["result"]["accuracy"] > 0.8
    assert [p.step for p in fleet.calls.metrics(job.id)["loss"]] == [0, 1, 2, 3]
    kinds = [a.kind for a in fleet.calls.artifacts(job.id)]
    assert kinds.count("checkpoint") == 4


def test_tensorfleets_three_model_types_train_as_train_jobs(fleet):
    pytest.importorskip("sklearn")
    fleet.start_server()
    fleet.start_worker("w1", slots=3)
    configs = [{"model": "neural_network", "epochs": 5},
               json.loads((EXAMPLES / "tensorfleet.json").read_text()),
               {"model": "random_forest", "iterations": 3}]  # fmt: skip
    jobs = [fleet.calls.submit(["tensorfleet_models:fit"], kind="train", params=c,
                               workdir=EXAMPLES) for c in configs]  # fmt: skip
    for job, config in zip(jobs, configs, strict=True):
        done = fleet.wait_state(job.id, {"succeeded", "failed"}, seconds=300)
        assert done["state"] == "succeeded", done["error"]
        assert done["result"]["model"] == config["model"] and done["result"]["accuracy"] > 0.7
        series = fleet.calls.metrics(job.id)
        assert set(series) == {"loss", "accuracy"} and len(series["loss"]) >= 3


def test_the_example_suite_and_benchmark_run_as_their_kinds(fleet):
    pytest.importorskip("sklearn")
    fleet.start_server()
    fleet.start_worker("w1", slots=2)
    suite = fleet.calls.submit(["tests/"], kind="test", workdir=EXAMPLES / "suite")
    done = fleet.wait_state(suite.id, {"succeeded", "failed"}, seconds=120)
    assert done["state"] == "succeeded" and done["result"]["passed"] == 2, done
    _torch()
    config = json.loads((EXAMPLES / "benchmark.json").read_text())
    bench = fleet.calls.submit([], kind="benchmark", params={**config, "iterations": 3})
    done = fleet.wait_state(bench.id, {"succeeded", "failed"}, seconds=300)
    assert done["state"] == "succeeded", done["error"]
    assert [r["batch_size"] for r in done["result"]["results"]] == config["batch_sizes"]


def test_a_task_kind_from_an_installed_package(fleet, tmp_path):
    site, source = tmp_path / "site", tmp_path / "kind-package"
    shutil.copytree(EXAMPLES / "kind-package", source)  # a build writes beside its sources
    subprocess.run([PY, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    fleet.start_server()
    fleet.start_worker("w1", slots=1, PYTHONPATH=path)
    ok = fleet.calls.submit(["echo one; echo two"], kind="shell")
    done = fleet.wait_state(ok.id, {"succeeded", "failed"})
    assert done["state"] == "succeeded", done["error"]
    assert done["result"] == {"lines": 2, "last": "two"}
    strict = fleet.calls.submit(["false | cat; echo not reached"], kind="shell")
    done = fleet.wait_state(strict.id, {"succeeded", "failed"})
    assert done["state"] == "failed" and "failing step" in done["error"], done
    unknown = fleet.calls.submit(["x"], kind="no-such-kind")
    done = fleet.wait_state(unknown.id, {"succeeded", "failed"})
    assert done["state"] == "failed" and "no task kind 'no-such-kind'" in done["error"]
