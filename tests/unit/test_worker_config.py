"""Worker settings: flags, CORRAL_* env vars, label parsing, the token kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.worker.config import WorkerSettings, parse_labels

ENV = (
    "CORRAL_ORCHESTRATOR_URL",
    "CORRAL_WORKER_TOKEN",
    "CORRAL_WORKER_NAME",
    "CORRAL_WORKER_LABELS",
    "CORRAL_MAX_CONCURRENT_TASKS",
    "CORRAL_WORKER_PERSISTENT",
    "CORRAL_HEARTBEAT_INTERVAL",
    "CORRAL_WORKER_DATA_DIR",
)


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


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


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CORRAL_ORCHESTRATOR_URL", "http://a:1, http://b:2")
    monkeypatch.setenv("CORRAL_WORKER_TOKEN", " wt_secret\n")
    monkeypatch.setenv("CORRAL_WORKER_NAME", "gpu-1")
    monkeypatch.setenv("CORRAL_WORKER_LABELS", "gpu=a100,zone=eu")
    monkeypatch.setenv("CORRAL_MAX_CONCURRENT_TASKS", "4")
    monkeypatch.setenv("CORRAL_WORKER_PERSISTENT", "true")
    monkeypatch.setenv("CORRAL_HEARTBEAT_INTERVAL", "5")
    monkeypatch.setenv("NAME", "not-this")  # a plain NAME must not be taken for the worker's
    s = WorkerSettings()
    assert s.urls == ["http://a:1", "http://b:2"]
    assert s.worker_token.get_secret_value() == "wt_secret"
    assert (s.name, s.labels, s.max_concurrent_tasks) == ("gpu-1", {"gpu": "a100", "zone": "eu"}, 4)
    assert s.persistent is True and s.heartbeat_interval_s == 5
    assert s.data_dir == Path.home() / ".corral" / "worker" / "gpu-1"


def test_flags_win_and_unset_flags_do_not_hide_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CORRAL_WORKER_TOKEN", "from-env")
    monkeypatch.setenv("CORRAL_WORKER_NAME", "env-name")
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
        {"orchestrator_url": "http://c:3"},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WorkerSettings(**kwargs)
