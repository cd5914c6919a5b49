"""corral.sdk: what a job's own code calls."""

from __future__ import annotations

import json
import math

import pytest

from corral import sdk


class _Scalar:
    """Looks like a numpy scalar: has item()."""

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk, "_last", {})
    for name in (sdk.ENV_JOB_ID, sdk.ENV_ATTEMPT, sdk.ENV_RESULT_FILE):
        monkeypatch.delenv(name, raising=False)


def _metric_lines(out: str) -> list[dict[str, object]]:
    return [
        json.loads(line.removeprefix(sdk.METRIC_PREFIX))
        for line in out.splitlines()
        if line.startswith(sdk.METRIC_PREFIX)
    ]


def test_report_prints_one_json_line_and_remembers(capsys: pytest.CaptureFixture[str]) -> None:
    sdk.report(step=3, loss=0.25, acc=_Scalar(0.5))
    sdk.report(loss=0.125)
    assert _metric_lines(capsys.readouterr().out) == [
        {"step": 3, "loss": 0.25, "acc": 0.5},
        {"loss": 0.125},
    ]
    assert sdk.last_metrics() == {"step": 3, "loss": 0.125, "acc": 0.5}


def test_report_keeps_lines_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    sdk.report(step=1, loss=math.nan, grad=math.inf, tags=("a", "b"))
    line = capsys.readouterr().out.strip().removeprefix(sdk.METRIC_PREFIX)
    assert "NaN" not in line and "Infinity" not in line
    assert json.loads(line) == {"step": 1, "loss": None, "grad": None, "tags": ["a", "b"]}


def test_context_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sdk.job_id() is None and sdk.attempt() is None
    monkeypatch.setenv(sdk.ENV_JOB_ID, "j_1")
    monkeypatch.setenv(sdk.ENV_ATTEMPT, "2")
    assert sdk.job_id() == "j_1" and sdk.attempt() == 2
    monkeypatch.setenv(sdk.ENV_ATTEMPT, "garbage")
    assert sdk.attempt() is None


def test_set_result_writes_json_atomically(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "result.json"
    monkeypatch.setenv(sdk.ENV_RESULT_FILE, str(target))
    sdk.set_result({"accuracy": 0.9, "bad": math.nan})
    sdk.set_result({"accuracy": 0.95})  # replaces, never appends
    assert json.loads(target.read_text()) == {"accuracy": 0.95}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]  # no temp files left


def test_set_result_outside_corral_warns_and_does_nothing(tmp_path) -> None:
    with pytest.warns(RuntimeWarning, match="not running under Corral"):
        sdk.set_result({"x": 1})


def test_set_result_wants_a_dict(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(sdk.ENV_RESULT_FILE, str(tmp_path / "r.json"))
    with pytest.raises(TypeError):
        sdk.set_result([1, 2])  # type: ignore[arg-type]


# ---- checkpoints ---------------------------------------------------------------------


@pytest.fixture
def by_hand(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """A script run by hand in ``tmp_path``: no Corral variables."""
    for name in (sdk.ENV_CHECKPOINT_DIR, sdk.ENV_RESUME_DIR):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_by_hand_a_script_resumes_from_what_it_kept_last(by_hand) -> None:
    assert sdk.resume() is None
    for step in range(5):
        sdk.checkpoint(json.dumps({"w": step}).encode(), step=step)
    ck = sdk.resume()
    assert ck is not None and ck.step == 4 and json.loads(ck.read_bytes()) == {"w": 4}
    kept = sorted(p.name for p in (by_hand / ".corral-checkpoints").iterdir())
    assert len(kept) == 3 and kept[-1].startswith("step-4-")  # the newest three stay


def test_a_file_or_a_directory_is_copied_whole(by_hand) -> None:
    (by_hand / "model.bin").write_bytes(b"weights")
    (by_hand / "run").mkdir()
    (by_hand / "run" / "opt.bin").write_bytes(b"adam")
    sdk.checkpoint(by_hand / "model.bin", step=1)
    (by_hand / "model.bin").write_bytes(b"overwritten")  # the checkpoint is a copy
    assert sdk.resume().read_bytes() == b"weights"
    sdk.checkpoint(by_hand / "run", step=2, name="optimizer")
    ck = sdk.resume()
    assert (ck.step, ck.name, (ck.path / "opt.bin").read_bytes()) == (2, "optimizer", b"adam")
    with pytest.raises(IsADirectoryError):
        ck.read_bytes()
    with pytest.raises(ValueError, match="step"):
        sdk.checkpoint(b"x", step=-1)
    with pytest.raises(FileNotFoundError):
        sdk.checkpoint(by_hand / "missing", step=3)


def test_under_corral_checkpoints_go_to_the_worker_and_resume_reads_what_it_restored(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, restored = tmp_path / "checkpoints", tmp_path / "resume"
    monkeypatch.setenv(sdk.ENV_CHECKPOINT_DIR, str(out))
    monkeypatch.setenv(sdk.ENV_RESUME_DIR, str(restored))
    assert sdk.resume() is None  # the worker restored nothing: the first attempt
    for step in range(5):
        sdk.checkpoint(b"x", step=step)
    assert len(list(out.iterdir())) == 5  # nothing pruned: the worker takes each away
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    # What the worker restores is one checkpoint's directory, as checkpoint() made it.
    (restored).mkdir()
    newest = sorted(out.iterdir())[-1]
    for item in newest.iterdir():
        item.rename(restored / item.name)
    ck = sdk.resume()
    assert ck is not None and ck.step == 4 and ck.read_bytes() == b"x"


def test_context_names_the_job_and_its_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (sdk.context().job_id, sdk.context().rank, sdk.context().world_size) == (None, 0, 1)
    monkeypatch.setenv(sdk.ENV_JOB_ID, "job_1")
    monkeypatch.setenv(sdk.ENV_ATTEMPT, "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("CORRAL_PARAMS", '{"lr": 0.1}')
    ctx = sdk.context()
    assert (ctx.job_id, ctx.attempt, ctx.rank, ctx.world_size, ctx.params) == (
        "job_1", 2, 1, 4, {"lr": 0.1})  # fmt: skip
