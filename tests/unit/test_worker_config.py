"""Worker settings: flags, CORRAL_WORKER__* env vars (and the old names), label parsing,
the token kept secret."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.worker.config import WorkerSettings, parse_labels


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CORRAL_")]:
        monkeypatch.delenv(name)


def test_parse_labels() -> None:
    assert parse_labels("gpu=a100, zone=eu-west ,") == {"gpu": "a100", "zone": "eu-west"}
    assert parse_labels("") == {}
    assert parse_labels("empty=") == {"empty": ""}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gpu", "not key=value"),
        ("=a100", "not key=value"),
        ("a=1,a=2", "given twice"),
        ("bad key=1", "may hold only"),
    ],
)
def test_parse_labels_refuses_bad_input(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_labels(text)


NEW_AND_OLD = {
    "ORCHESTRATOR_URL": ("CORRAL_ORCHESTRATOR_URL", "http://a:1, http://b:2"),
    "TOKEN": ("CORRAL_WORKER_TOKEN", " wt_secret\n"),
    "NAME": ("CORRAL_WORKER_NAME", "gpu-1"),
    "LABELS": ("CORRAL_WORKER_LABELS", "gpu=a100,zone=eu"),
    "MAX_CONCURRENT_TASKS": ("CORRAL_MAX_CONCURRENT_TASKS", "4"),
    "PERSISTENT": ("CORRAL_WORKER_PERSISTENT", "true"),
    "HEARTBEAT_INTERVAL_S": ("CORRAL_HEARTBEAT_INTERVAL", "5"),
    "KILL_GRACE_S": ("CORRAL_WORKER_KILL_GRACE", "2.5"),
    "PASS_ENV": ("CORRAL_WORKER_PASS_ENV", "HF_HOME, WANDB_API_KEY"),
}


def _check(s: WorkerSettings, data_dir: Path | None = None) -> None:
    assert s.urls == ["http://a:1", "http://b:2"]
    assert s.worker_token.get_secret_value() == "wt_secret"
    assert (s.name, s.labels, s.max_concurrent_tasks) == ("gpu-1", {"gpu": "a100", "zone": "eu"}, 4)
    assert s.persistent is True and s.heartbeat_interval_s == 5 and s.kill_grace_s == 2.5
    assert s.pass_env == ["HF_HOME", "WANDB_API_KEY"]
    assert s.data_dir == (data_dir or Path.home() / ".corral" / "worker" / "gpu-1")


def test_settings_from_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, (_, value) in NEW_AND_OLD.items():
        monkeypatch.setenv(f"CORRAL_WORKER__{key}", value)
    monkeypatch.setenv("NAME", "not-this")  # a plain NAME must not be taken for the worker's
    monkeypatch.setenv("TOKEN", "not-this")
    _check(WorkerSettings())
    assert capsys.readouterr().err == ""


def test_old_env_names_still_work_and_say_the_new_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORRAL_WORKER_DATA_DIR", "/tmp/w")
    for old, value in NEW_AND_OLD.values():
        monkeypatch.setenv(old, value)
    s = WorkerSettings()
    _check(s, data_dir=Path("/tmp/w"))
    assert str(s.origins["worker_token"]) == "env CORRAL_WORKER_TOKEN (deprecated)"
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(NEW_AND_OLD) + 1  # one line for each old name
    for key, (old, _) in NEW_AND_OLD.items():
        assert f"corral: warning: {old} is deprecated, use CORRAL_WORKER__{key}" in lines


def test_the_new_name_beats_the_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_WORKER__ORCHESTRATOR_URL", "http://new:1")
    monkeypatch.setenv("CORRAL_ORCHESTRATOR_URL", "http://old:1")
    monkeypatch.setenv("CORRAL_WORKER__TOKEN", "t")
    s = WorkerSettings()
    assert s.orchestrator_url == "http://new:1"
    assert str(s.origins["orchestrator_url"]) == "env CORRAL_WORKER__ORCHESTRATOR_URL"


def test_flags_win_and_unset_flags_do_not_hide_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CORRAL_WORKER__TOKEN", "from-env")
    monkeypatch.setenv("CORRAL_WORKER__NAME", "env-name")
    s = WorkerSettings(
        orchestrator_url="http://c:3",
        worker_token=None,
        name="flag-name",
        labels=["a=1", "b=2"],
        data_dir=tmp_path,
        persistent=None,
    )
    assert s.worker_token.get_secret_value() == "from-env"
    assert s.name == "flag-name" and s.labels == {"a": "1", "b": "2"}
    assert s.persistent is False and s.data_dir == tmp_path
    assert "heartbeat_interval_s" not in s.model_fields_set


def test_token_never_shown() -> None:
    s = WorkerSettings(orchestrator_url="http://c:3", worker_token="wt_topsecret")
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "wt_topsecret" not in text
    assert s.name  # the hostname by default


@pytest.mark.parametrize(
    "kwargs",
    [
        {"orchestrator_url": "c:3", "worker_token": "t"},
        {"orchestrator_url": " , ", "worker_token": "t"},
        {"orchestrator_url": "http://c:3", "worker_token": "  "},
        {"orchestrator_url": "http://c:3", "worker_token": "t", "max_concurrent_tasks": 0},
        {"orchestrator_url": "http://c:3", "worker_token": "t", "labels": "nope"},
        {"orchestrator_url": "http://c:3", "worker_token": "t", "bogus": 1},
        {"orchestrator_url": "http://c:3", "worker_token": "t", "api_key": "k"},  # not both
        {"orchestrator_url": "http://c:3", "worker_token": "t", "sandbox": "maybe"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**kwargs)


def test_only_corral_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TOKEN", "WORKER_TOKEN", "CORRAL_TOKEN", "ORCHESTRATOR_URL"):
        monkeypatch.setenv(name, "not-this")
    with pytest.raises(ValidationError) as info:
        WorkerSettings()
    assert {e["type"] for e in info.value.errors()} == {"missing"}


def test_prefetch_defaults_to_four_calls_a_slot_and_takes_zero(tmp_path: Path) -> None:
    def prefetch(**kw: object) -> int:
        s = WorkerSettings(orchestrator_url="http://c:1", worker_token="wt_x",  # type: ignore[arg-type]
                           data_dir=tmp_path, **kw)  # fmt: skip
        return s.call_prefetch

    assert prefetch(max_concurrent_tasks=3) == 12
    assert prefetch(max_concurrent_tasks=1000) == 1024
    assert prefetch(max_concurrent_tasks=3, prefetch=0) == 0
    with pytest.raises(ValidationError):
        prefetch(prefetch=-1)
