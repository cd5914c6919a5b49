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
