"""What travels with a job, with real coordinator and worker processes: a submitted directory
that exists nowhere else, and checkpoints that let a job killed with its worker resume on
another one from where it was."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from harness_e2e import ADMIN_KEY, wait_until
from typer.testing import CliRunner

from corral.cli.main import app

PY = sys.executable

# A training loop that is exact to the bit however it is cut: gradient descent on
# (w - 3)^2, a checkpoint every 5 steps, 40 steps. It resumes from the checkpoint it is
# given, and says where it started.
TRAIN = """\
import json, os, sys, time
from corral import sdk

ck = sdk.resume()
state = json.loads(ck.read_bytes()) if ck else {"w": 0.0}
start = ck.step + 1 if ck else 0
print(f"starting at step {start}", flush=True)
pid_file = os.environ.get("PID_FILE")
if pid_file:
    open(pid_file, "w").write(str(os.getpid()))
w = state["w"]
for step in range(start, 40):
    w -= 0.1 * 2 * (w - 3)
    sdk.report(step=step, loss=(w - 3) ** 2)
    if step % 5 == 4:
        sdk.checkpoint(json.dumps({"w": w}).encode(), step=step)
    time.sleep(float(os.environ.get("STEP_S", "0")))
sdk.set_result({"w": w, "started_at_step": start})
"""


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "train.py").write_text(TRAIN)
    (root / "lib").mkdir()
    (root / "lib" / "helper.py").write_text("GREETING = 'from the submitted directory'\n")
    (root / "show.py").write_text(
        "import os, sys\nsys.path.insert(0, 'lib')\nimport helper\nprint(helper.GREETING)\n"
        "print(sorted(os.path.relpath(os.path.join(d, f)) for d, _, fs in os.walk('.')"
        " for f in fs if not d.startswith('./.corral') and '__pycache__' not in d))\n"
    )
    (root / ".gitignore").write_text("*.log\n")
    (root / ".corralignore").write_text("data/\n")
    (root / "debug.log").write_text("not wanted")
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(b"0" * 1000)
    return root


def test_a_job_runs_in_the_directory_it_was_submitted_with(fleet, tmp_path):
    project = _project(tmp_path / "project")
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    first = fleet.calls.submit([PY, "show.py"], workdir=project)
    done = fleet.wait_state(first.id, {"succeeded", "failed"})
    assert done["state"] == "succeeded", fleet.logs(first.id)
    out = fleet.logs(first.id)
    assert "from the submitted directory" in out
    # What .gitignore and .corralignore leave out did not travel.
    assert "['.corralignore', '.gitignore', 'lib/helper.py', 'show.py', 'train.py']" in out
    # The same directory again: the same package, not uploaded or fetched again.
    second = fleet.calls.submit([PY, "show.py"], workdir=project)
    assert second.workdir == done["workdir"]
    assert fleet.wait_state(second.id, {"succeeded", "failed"})["state"] == "succeeded"
    log = fleet.procs[-1].output()
    assert log.count("workdir.unpacked") == 2
    assert '"fetched": true' in log and '"fetched": false' in log


def test_a_job_killed_with_its_worker_resumes_elsewhere_from_its_checkpoint(fleet, tmp_path):
    project = _project(tmp_path / "project")
    # The same script run by hand, uninterrupted: what the resumed run must equal.
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "train.py").write_text(TRAIN)
    by_hand = subprocess.run([PY, "train.py"], cwd=alone, capture_output=True, text=True,
                             check=True)  # fmt: skip
    assert "starting at step 0" in by_hand.stdout
    fleet.start_server()
    first = fleet.start_worker("doomed", slots=1)
    pid_file = tmp_path / "pid"
    job = fleet.calls.submit([PY, "train.py"], workdir=project, retries=3,
                             env={"STEP_S": "0.15", "PID_FILE": str(pid_file)})  # fmt: skip

    def stored_step() -> int | None:
        steps = [a.step for a in fleet.calls.artifacts(job.id) if a.kind == "checkpoint"]
        return max(steps) if steps and max(steps) >= 9 else None

    reached = wait_until(stored_step, 60, "a checkpoint past step 9")
    # The machine dies: its worker and the job with it.
    first.kill9()
    os.killpg(os.getpgid(int(pid_file.read_text())), signal.SIGKILL)
    fleet.start_worker("survivor", slots=1)
    done = fleet.wait_state(job.id, {"succeeded", "failed"}, seconds=120)
    assert done["state"] == "succeeded", fleet.logs(job.id)
    assert done["attempt"] >= 2
    resumed_at = done["result"]["started_at_step"]
    assert resumed_at > reached >= 9 and resumed_at % 5 == 0
    logs = fleet.logs(job.id)
    assert f"resuming from the checkpoint of step {resumed_at - 1} (attempt 1)" in logs
    assert f"starting at step {resumed_at}" in logs
    events = list(fleet.calls.events(job.id))
    kinds = [e.kind for e in events]
    assert "job.checkpointed" in kinds and kinds.index("job.checkpointed") < kinds.index(
        "job.requeued"
    )
    (resumed,) = [e for e in events if e.kind == "job.resumed"]
    assert resumed.detail["step"] == resumed_at - 1 and resumed.attempt == done["attempt"]
    # Its reported loss is a series per attempt: the last one's from where it resumed.
    loss = fleet.calls.metrics(job.id)["loss"]
    assert [p.step for p in loss if p.attempt == done["attempt"]] == list(range(resumed_at, 40))
    # What attempt 1 said before it died reached the coordinator in order and without a gap;
    # its last lines may have died with it (its output is shipped apart from its checkpoints,
    # each every half second, and the kill can fall between the two).
    first = [p.step for p in loss if p.attempt == 1]
    assert first and first == list(range(len(first)))
    # As good as the uninterrupted run: the same weight, to the bit.
    by_hand_w = _final_w(by_hand.stdout)
    assert done["result"]["w"] == by_hand_w


def _final_w(stdout: str) -> float:
    """The loss of step 39 that the script printed, back to its weight."""
    lines = [json.loads(line.removeprefix("corral.metric ")) for line in stdout.splitlines()
             if line.startswith("corral.metric ")]  # fmt: skip
    last = lines[-1]
    assert last["step"] == 39
    return 3 - last["loss"] ** 0.5


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_the_cli_submits_a_directory_and_fetches_what_the_job_stored(fleet, tmp_path, runner):
    project = _project(tmp_path / "project")
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    base = ["--url", fleet.url, "--api-key", ADMIN_KEY]
    r = runner.invoke(app, ["submit", *base, "--workdir", str(project), "--json", "--",
                            PY, "train.py"])  # fmt: skip
    assert r.exit_code == 0, r.output
    job_id = json.loads(r.stdout)["id"]
    assert fleet.wait_state(job_id, {"succeeded", "failed"})["state"] == "succeeded"
    r = runner.invoke(app, ["jobs", "metrics", job_id, *base])
    assert r.exit_code == 0, r.output
    row = next(line for line in r.stdout.splitlines() if " loss " in f" {line} ")
    assert " 40 " in row and " 0..39 " in row, r.stdout
    r = runner.invoke(app, ["jobs", "metrics", job_id, *base, "--json", "--name", "loss"])
    series = json.loads(r.stdout)["series"]
    assert [s["name"] for s in series] == ["loss"] and len(series[0]["points"]) == 40
    r = runner.invoke(app, ["artifacts", "ls", job_id, *base, "--json"])
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)["artifacts"]
    assert [a["step"] for a in listed] == [39, 34, 29, 24, 19, 14, 9, 4]
    out = tmp_path / "got"
    out.mkdir()
    r = runner.invoke(app, ["artifacts", "get", job_id, *base, "-o", str(out)])
    assert r.exit_code == 0, r.output
    with tarfile.open(out / "data-step-39.tar") as tar:
        member = tar.extractfile("data")
        assert member is not None and "w" in json.loads(member.read())
    r = runner.invoke(app, ["artifacts", "get", job_id, "nope", *base])
    assert r.exit_code == 2 and "no artifact 'nope'" in r.stderr
    (project / "lib" / "table.txt").write_text("x" * 2000)
    too_big = ["submit", *base, "--workdir", str(project), "--workdir-max-mb", "0.001",
               "--", PY, "train.py"]  # fmt: skip
    r = runner.invoke(app, too_big)
    assert r.exit_code == 2 and "--workdir:" in r.stderr and ".corralignore" in r.stderr


def test_a_job_whose_directory_is_gone_from_the_store_fails_saying_so(fleet, tmp_path):
    project = _project(tmp_path / "project")
    fleet.start_server()
    job = fleet.calls.submit([PY, "show.py"], workdir=project, retries=3)
    (blob,) = (fleet.root / "server" / "blobs").rglob(job.workdir)  # an operator removed it
    blob.unlink()
    fleet.start_worker("w1", slots=1)
    done = fleet.wait_state(job.id, {"succeeded", "failed"})
    assert done["state"] == "failed" and done["attempt"] == 1, done
    assert "cannot fetch its working directory" in done["error"] and job.workdir in done["error"]


def _wheel(where: Path, name: str = "corral_probe_pkg", version: str = "0.1") -> Path:
    """A wheel of a one-module package, made by hand (a wheel is a zip with its metadata), so
    the test needs no package index."""
    import zipfile

    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    path = where / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
    return path


def test_a_job_gets_the_packages_it_names_in_an_environment_built_once(fleet, tmp_path):
    wheel = _wheel(tmp_path)
    fleet.start_server()
    worker = fleet.start_worker("w1", slots=2)
    code = ("import corral.sdk, corral_probe_pkg, sys; print('probe', corral_probe_pkg.VERSION,"
            " sys.prefix)")  # fmt: skip
    # `python` on the job's PATH is its environment's (a job naming an interpreter by its
    # full path gets that one).
    first = fleet.calls.submit(["python", "-c", code], requirements=[str(wheel)])
    done = fleet.wait_state(first.id, {"succeeded", "failed"}, seconds=180)
    assert done["state"] == "succeeded", (done["error"], fleet.logs(first.id))
    assert "probe 0.1" in fleet.logs(first.id) and "/envs/" in fleet.logs(first.id)
    assert done["requirements"] == [str(wheel)]
    # The same lines again, twice at once: the environment is there, built once.
    again = [fleet.calls.submit(["python", "-c", code], requirements=[str(wheel)])
             for _ in range(2)]  # fmt: skip
    for job in again:
        assert fleet.wait_state(job.id, {"succeeded", "failed"})["state"] == "succeeded"
    log = worker.output()
    assert log.count('"built": true') == 1 and log.count('"built": false') == 2
    # Without requirements a job runs as it did, in the worker's own interpreter.
    plain = fleet.calls.submit([PY, "-c", "import sys; print(sys.prefix)"])
    assert fleet.wait_state(plain.id, {"succeeded"})["state"] == "succeeded"
    assert "/envs/" not in fleet.logs(plain.id)


def test_an_install_that_fails_fails_the_job_with_the_installers_words(fleet, tmp_path):
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    missing = str(tmp_path / "no_such_pkg-1.0-py3-none-any.whl")
    job = fleet.calls.submit([PY, "-c", "pass"], requirements=[missing], retries=3)
    done = fleet.wait_state(job.id, {"succeeded", "failed"}, seconds=180)
    assert done["state"] == "failed" and done["attempt"] == 1, done
    assert "cannot install its requirements" in done["error"]
    assert "no_such_pkg" in done["error"]  # pip's own words name what it could not find


SUITE = """\
import pytest

def test_adds():
    assert 1 + 1 == 2

def test_breaks():
    assert 2 * 2 == 5, "arithmetic is off"

@pytest.mark.skip(reason="not today")
def test_later():
    pass

@pytest.mark.fast
def test_fast():
    pass
"""


def test_a_test_job_runs_pytest_and_its_outcomes_are_the_result(fleet, tmp_path, runner):
    project = tmp_path / "suite"
    (project / "tests").mkdir(parents=True)
    (project / "tests" / "test_math.py").write_text(SUITE)
    (project / "pytest.ini").write_text("[pytest]\nmarkers =\n    fast: quick ones\n")
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    base = ["--url", fleet.url, "--api-key", ADMIN_KEY]
    r = runner.invoke(app, ["submit", *base, "--kind", "test", "--workdir", str(project),
                            "--json", "--", "tests/", "-q"])  # fmt: skip
    assert r.exit_code == 0, r.output
    job = fleet.wait_state(json.loads(r.stdout)["id"], {"succeeded", "failed"})
    # A failing test is a result, not a failed job.
    assert job["state"] == "succeeded", job["error"]
    result = job["result"]
    assert {k: result[k] for k in ("passed", "failed", "skipped", "errors")} == {
        "passed": 2, "failed": 1, "skipped": 1, "errors": 0}  # fmt: skip
    broke = next(t for t in result["tests"] if t["outcome"] == "failed")
    assert broke["id"].endswith("::test_breaks") and "arithmetic is off" in broke["message"]
    shown = runner.invoke(app, ["jobs", "show", job["id"], *base])
    assert "2 passed, 1 failed, 1 skipped, 0 errors" in shown.stdout, shown.stdout
    assert "test_breaks" in shown.stdout
    # Its arguments are pytest's: a marker selects.
    fast = fleet.calls.submit(["tests/", "-m", "fast"], kind="test", workdir=project)
    done = fleet.wait_state(fast.id, {"succeeded", "failed"})
    assert (done["state"], done["result"]["passed"], len(done["result"]["tests"])) == (
        "succeeded", 1, 1)  # fmt: skip
    # pytest itself failing is a failed job.
    bad = fleet.calls.submit(["--no-such-option"], kind="test", workdir=project)
    done = fleet.wait_state(bad.id, {"succeeded", "failed"})
    assert done["state"] == "failed" and "pytest was used wrongly" in done["error"], done


FIT = """\
from corral import sdk

def fit(config):
    ck = sdk.resume()
    w = 0.0
    for epoch in range(config["epochs"]):
        w += config["lr"] * (1 - w)
        sdk.report(step=epoch, loss=(1 - w) ** 2)
    return {"w": w, "rank": sdk.context().rank, "lr": config["lr"]}
"""


def test_a_train_job_calls_its_function_with_its_config(fleet, tmp_path, runner):
    project = tmp_path / "trainer"
    project.mkdir()
    (project / "model.py").write_text(FIT)
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"epochs": 5, "lr": 0.5}))
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    base = ["--url", fleet.url, "--api-key", ADMIN_KEY]
    train = ["--kind", "train", "--entry", "model:fit", "--config", str(config)]
    r = runner.invoke(app, ["submit", *base, *train, "--workdir", str(project), "--json"])
    assert r.exit_code == 0, r.output
    job = fleet.wait_state(json.loads(r.stdout)["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded", job["error"]
    assert job["result"] == {"w": 0.96875, "rank": 0, "lr": 0.5}
    assert job["params"] == {"epochs": 5, "lr": 0.5} and job["command"] == ["model:fit"]
    assert [p.step for p in fleet.calls.metrics(job["id"])["loss"]] == [0, 1, 2, 3, 4]
    # What is wrong with the request is said before anything runs.
    for args, said in ((["--kind", "train", "--", "x"], "--entry"),
                       (["--entry", "model:fit", "--", "x"], "only for --kind train"),
                       (["--kind", "train", "--entry", "m:f", "--config", str(tmp_path)],
                        "cannot read")):  # fmt: skip
        r = runner.invoke(app, ["submit", *base, *args])
        assert r.exit_code == 2 and said in r.stderr, (args, r.stderr)


def test_a_benchmark_job_times_a_model_over_batch_sizes(fleet, tmp_path, runner):
    if os.environ.get("CORRAL_REQUIRE_TORCH") != "1":
        pytest.importorskip("torch")
    config = tmp_path / "bench.json"
    config.write_text(json.dumps({"model": "transformer", "layers": 1, "d_model": 64,
                                  "seq_len": 16, "batch_sizes": [1, 4], "iterations": 4,
                                  "warmup": 1, "precision": "bf16"}))  # fmt: skip
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    base = ["--url", fleet.url, "--api-key", ADMIN_KEY]
    r = runner.invoke(app, ["submit", *base, "--kind", "benchmark", "--config", str(config),
                            "--json"])  # fmt: skip
    assert r.exit_code == 0, r.output
    job = fleet.wait_state(json.loads(r.stdout)["id"], {"succeeded", "failed"}, seconds=120)
    assert job["state"] == "succeeded", job["error"]
    result = job["result"]
    assert (result["model"], result["precision"]) == ("transformer", "bf16")
    assert result["timing"].startswith("wall clock (CPU")  # no GPU here: it says so
    assert [row["batch_size"] for row in result["results"]] == [1, 4]
    for row in result["results"]:
        lat = row["latency_ms"]
        assert row["iterations"] == 4 and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        assert row["throughput_items_s"] > 0
    assert "p50 ms" in fleet.logs(job["id"])  # its table, in its output
    assert [p.step for p in fleet.calls.metrics(job["id"])["throughput_items_s"]] == [1, 4]
    # A config it cannot run fails the job, saying what is wrong.
    bad = fleet.calls.submit([], kind="benchmark", params={"model": "cnn", "precision": "fp8"})
    done = fleet.wait_state(bad.id, {"succeeded", "failed"}, seconds=120)
    assert done["state"] == "failed" and "precision: one of fp32" in done["error"], done


def test_declared_outputs_are_stored_when_the_job_succeeds(fleet, tmp_path, runner):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"the worker's own")
    code = ("import os; os.makedirs('model/sub', exist_ok=True)\n"
            "open('model/w.bin', 'wb').write(b'weights')\n"
            "open('model/sub/opt.bin', 'wb').write(b'adam')\n"
            "open('model/notes.txt', 'w').write('not declared')\n"
            f"os.symlink({str(secret)!r}, 'model/leak.bin')\n")  # fmt: skip
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    base = ["--url", fleet.url, "--api-key", ADMIN_KEY]
    r = runner.invoke(app, ["submit", *base, "--output", "model/*.bin", "--json", "--",
                            PY, "-c", code])  # fmt: skip
    assert r.exit_code == 0, r.output
    job = fleet.wait_state(json.loads(r.stdout)["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded" and job["outputs"] == ["model/*.bin"], job
    stored = {a.name: a for a in fleet.calls.artifacts(job["id"])}
    assert set(stored) == {"model/w.bin", "model/sub/opt.bin"}  # no link followed
    assert {a.kind for a in stored.values()} == {"output"}
    out = tmp_path / "got"
    out.mkdir()
    r = runner.invoke(app, ["artifacts", "get", job["id"], "model/w.bin", *base, "-o",
                            str(out / "w.bin")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (out / "w.bin").read_bytes() == b"weights"
    # A job that fails stores none.
    failed = fleet.calls.submit([PY, "-c", "open('x.bin', 'w').write('x'); raise SystemExit(1)"],
                                outputs=["*.bin"])  # fmt: skip
    assert fleet.wait_state(failed.id, {"succeeded", "failed"})["state"] == "failed"
    assert fleet.calls.artifacts(failed.id) == []


@pytest.mark.parametrize("fmt", ["csv", "parquet", "duckdb"])
def test_results_export_as_a_table_with_final_metrics(fleet, tmp_path, runner, fmt):
    if fmt != "csv":
        pytest.importorskip("pyarrow")
        if fmt == "duckdb":
            pytest.importorskip("duckdb")
    fleet.start_server()
    fleet.start_worker("w1", slots=2)
    code = ("from corral import sdk\nfor s in range(3): sdk.report(step=s, loss=1.0 / (s + 1))\n"
            "sdk.set_result({'accuracy': 0.9, 'notes': {'nested': 1}})")  # fmt: skip
    jobs = [fleet.calls.submit([PY, "-c", code]) for _ in range(2)]
    jobs.append(fleet.calls.submit([PY, "-c", "raise SystemExit(3)"]))
    for j in jobs:
        fleet.wait_state(j.id, {"succeeded", "failed"})
    out = tmp_path / f"results.{fmt}"
    base = ["--url", fleet.url, "--api-key", ADMIN_KEY]
    r = runner.invoke(app, ["results", "export", *base, "--format", fmt, "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "3 jobs" in r.stderr
    if fmt == "csv":
        import csv

        with out.open() as fh:
            table = list(csv.DictReader(fh))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(out).to_pylist()
    else:
        import duckdb

        with duckdb.connect(str(out)) as db:
            cur = db.execute("SELECT * FROM jobs")
            names = [d[0] for d in cur.description]
            table = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    by_id = {row["id"]: row for row in table}
    assert set(by_id) == {j.id for j in jobs}
    ok = by_id[jobs[0].id]
    assert float(ok["metric.loss"]) == pytest.approx(1 / 3) and float(ok["result.accuracy"]) == 0.9
    assert json.loads(ok["result"])["notes"] == {"nested": 1}  # nested: in the JSON only
    bad = by_id[jobs[2].id]
    assert bad["state"] == "failed" and str(bad["exit_code"]) == "3"
    assert bad["metric.loss"] in (None, "")
    r = runner.invoke(app, ["results", "export", *base, "--kind", "test", "-o", str(out)])
    assert r.exit_code == 0 and "0 jobs" in r.stderr
    r = runner.invoke(app, ["results", "export", *base, "--format", "xlsx"])
    assert r.exit_code == 2 and "--format" in r.stderr


def test_a_worker_keeps_its_results_in_a_local_duckdb_file(fleet, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    db = tmp_path / "results.duckdb"
    fleet.start_server()
    fleet.start_worker("w1", slots=1, CORRAL_WORKER__DB_PATH=str(db))
    ok = fleet.calls.submit([PY, "-c", "from corral import sdk; sdk.set_result({'acc': 0.9})"])
    bad = fleet.calls.submit([PY, "-c", "raise SystemExit(4)"])
    for job in (ok, bad):
        fleet.wait_state(job.id, {"succeeded", "failed"})

    def rows() -> list[tuple] | None:
        try:
            with duckdb.connect(str(db), read_only=True) as con:
                found = con.execute("SELECT job_id, outcome, exit_code, result->>'acc' FROM"
                                    " results ORDER BY finished_at").fetchall()  # fmt: skip
        except (duckdb.IOException, duckdb.CatalogException):
            return None  # not written yet, or being written
        return found if len(found) == 2 else None

    found = wait_until(rows, 30, "both rows")
    assert found == [(ok.id, "succeeded", 0, "0.9"), (bad.id, "failed", 4, None)]


def test_what_a_job_leaves_in_its_artifact_directory_is_kept(fleet):
    code = ("from corral import sdk\nd = sdk.context().artifact_dir / 'eval'\n"
            "d.mkdir(parents=True)\n(d / 'scores.json').write_text('{}')\n")  # fmt: skip
    fleet.start_server()
    fleet.start_worker("w1", slots=1)
    job = fleet.calls.submit([PY, "-c", code])
    assert fleet.wait_state(job.id, {"succeeded", "failed"})["state"] == "succeeded"
    assert [(a.kind, a.name) for a in fleet.calls.artifacts(job.id)] == [
        ("output", "eval/scores.json")]  # fmt: skip
