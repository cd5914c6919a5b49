"""One configuration scheme: CORRAL_<SECTION>__<KEY> (old names with a warning), the TOML
file below the environment, `corral config show` with sources and secrets redacted."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from corral.cli._exit import ExitCode
from corral.cli.main import app
from corral.config import ROOT_KEYS, CliSettings, ConfigError, use_file
from corral.server.config import ServerSettings
from corral.worker.config import WorkerSettings

pytestmark = pytest.mark.timeout(30)
runner = CliRunner()
SECRETS = ("ck_api_secret", "ck_bootstrap_secret", "wt_token_secret", "pw_in_db_url")


@pytest.fixture(autouse=True)
def _no_corral_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("CORRAL_")]:
        monkeypatch.delenv(name)


def toml(tmp_path: Path, text: str, name: str = "corral.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


def one_error_line(result: Any) -> str:
    assert result.exit_code == ExitCode.USAGE, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("corral: error: "), result.stderr
    return lines[0]


def test_the_package_imports_nothing_of_corral() -> None:
    pkg = Path(__file__).resolve().parents[2] / "src" / "corral" / "config"
    bad = []
    for f in sorted(pkg.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            bad += [f"{f.name}: {n}" for n in names if n.startswith("corral.") and
                    not n.startswith("corral.config")]  # fmt: skip
    assert not bad


def test_the_file_knows_every_top_level_key() -> None:
    assert tuple(k.key for k in CliSettings.setting_keys()) == ROOT_KEYS


def test_server_reads_its_section_and_the_old_name(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORRAL_SERVER__EVENTS_RETENTION_DAYS", "7.5")
    monkeypatch.setenv("CORRAL_SERVER__ACCESS_LOG", "true")
    monkeypatch.setenv("CORRAL_BOOTSTRAP_ADMIN_KEY", "ck_old_0123456789abcdef0123456789")
    s = ServerSettings()
    assert s.events_retention_days == 7.5 and s.access_log is True
    assert s.bootstrap_admin_key is not None
    assert s.bootstrap_admin_key.get_secret_value() == "ck_old_0123456789abcdef0123456789"
    assert str(s.origins["bootstrap_admin_key"]) == "env CORRAL_BOOTSTRAP_ADMIN_KEY (deprecated)"
    assert capsys.readouterr().err.splitlines() == [
        "corral: warning: CORRAL_BOOTSTRAP_ADMIN_KEY is deprecated,"
        " use CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY"
    ]
    monkeypatch.setenv("CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY", "ck_new_0123456789abcdef0123456789")
    s = ServerSettings()
    assert s.bootstrap_admin_key is not None
    assert s.bootstrap_admin_key.get_secret_value() == "ck_new_0123456789abcdef0123456789"
    assert ServerSettings(access_log=False).access_log is False
    with pytest.raises(ConfigError, match="CORRAL_SERVER__EVENTS_RETENTION_DAYS"):
        monkeypatch.setenv("CORRAL_SERVER__EVENTS_RETENTION_DAYS", "-1")
        ServerSettings.load()


def test_server_flag_beats_env_beats_file_beats_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = toml(tmp_path, '[server]\nport = 1001\nhost = "0.0.0.0"\nreaper_interval_s = 3\n')
    monkeypatch.setenv("CORRAL_SERVER__PORT", "1002")
    monkeypatch.setenv("CORRAL_SERVER__HOST", "10.0.0.1")
    with use_file(path):
        s = ServerSettings.load({"port": 1003})
    assert (s.port, s.host, s.reaper_interval_s, s.stream_grace_s) == (1003, "10.0.0.1", 3, 6)
    assert {
        k: str(s.origins[k]) for k in ("port", "host", "reaper_interval_s", "stream_grace_s")
    } == {
        "port": "flag",
        "host": "env CORRAL_SERVER__HOST",
        "reaper_interval_s": f"file {path}",
        "stream_grace_s": "default",
    }


def test_worker_flag_beats_env_beats_old_env_beats_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = toml(
        tmp_path,
        '[worker]\norchestrator_url = "http://file:1"\ntoken = "wt_file"\nname = "file-name"\n'
        'labels = { gpu = "a100" }\nmax_concurrent_tasks = 3\npass_env = ["HF_HOME"]\n'
        "kill_grace_s = 4\n",
    )
    monkeypatch.setenv("CORRAL_CONFIG", str(path))  # the file named by the environment
    monkeypatch.setenv("CORRAL_WORKER__NAME", "env-name")
    monkeypatch.setenv("CORRAL_WORKER__TOKEN", "wt_env")
    monkeypatch.setenv("CORRAL_WORKER_KILL_GRACE", "5")
    s = WorkerSettings.load({"name": "flag-name"})
    assert (s.name, s.worker_token.get_secret_value()) == ("flag-name", "wt_env")
    assert (s.orchestrator_url, s.labels, s.max_concurrent_tasks) == (
        "http://file:1",
        {"gpu": "a100"},
        3,
    )
    assert s.pass_env == ["HF_HOME"] and s.kill_grace_s == 5 and s.heartbeat_interval_s == 30
    assert {k: str(v) for k, v in s.origins.items() if k != "data_dir"} == {
        "orchestrator_url": f"file {path}",
        "worker_token": "env CORRAL_WORKER__TOKEN",
        "api_key": "default",
        "registration_token": "default",
        "name": "flag",
        "labels": f"file {path}",
        "max_concurrent_tasks": f"file {path}",
        "persistent": "default",
        "heartbeat_interval_s": "default",
        "prefetch": "default",
        "kill_grace_s": "env CORRAL_WORKER_KILL_GRACE (deprecated)",
        "log_flush_stall_s": "default",
        "pass_env": f"file {path}",
        "ca_file": "default",
        "ssl_no_verify": "default",
        "run_as_users": "default",
        "sandbox": "default",
        "sandbox_hide": "default",
        **dict.fromkeys(
            (
                "profile",
                "tags",
                "gpu_ids",
                "db_path",
                "memory_buffer",
                "max_cpu_percent",
                "max_memory_percent",
                "max_gpu_percent",
                "cooldown_s",
                "task_timeout_s",
                "metrics_host",
                "metrics_port",
                "ui",
                "ui_host",
                "ui_port",
            ),
            "default",
        ),
    }


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("[server\nport = 1\n", "not a TOML file"),
        ("prot = 1\n", "'prot'"),
        ("server = 1\n", "[server]"),
        ("[server]\nprot = 1\n", "'prot' in [server]"),
        ('[server]\nport = "high"\n', "[server] port: Input should be a valid integer"),
        ("[worker]\nmax_concurrent_tasks = 0\n", "[worker] max_concurrent_tasks:"),
        ("url = 5\n", "url: Input should be a valid string"),
        ('log_level = "loud"\n', "log_level:"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_file_and_key(
    tmp_path: Path, text: str, mentions: str
) -> None:
    path = toml(tmp_path, text)
    line = one_error_line(invoke("--config", str(path), "config", "show"))
    assert str(path) in line and mentions in line
    line = one_error_line(invoke("config", "show", env={"CORRAL_CONFIG": str(path)}))
    assert str(path) in line and mentions in line


def test_server_and_worker_refuse_a_bad_section_before_starting(tmp_path: Path) -> None:
    path = toml(
        tmp_path,
        '[server]\nport = "high"\n[worker]\norchestrator_url = "http://c:1"\ntoken = "t"\n'
        'persistent = "maybe"\n',
    )
    line = one_error_line(invoke("--config", str(path), "server"))
    assert f"{path}: [server] port:" in line
    line = one_error_line(invoke("--config", str(path), "worker"))
    assert f"{path}: [worker] persistent:" in line


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.toml", tmp_path):  # absent; a directory
        line = one_error_line(invoke("--config", str(path), "jobs", "ls"))
        assert f"cannot read config file {path}" in line


def test_the_flag_names_the_file_over_the_environment(tmp_path: Path) -> None:
    good = toml(tmp_path, "[server]\nport = 1234\n", "good.toml")
    bad = toml(tmp_path, "not toml at all", "bad.toml")
    result = invoke(
        "--config", str(good), "config", "show", "--json", env={"CORRAL_CONFIG": str(bad)}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["server"]["port"]["value"] == 1234


def test_client_commands_take_url_from_the_file_below_env_and_flag(tmp_path: Path) -> None:
    # URLs the client refuses before it sends anything: the error names the one it took.
    path = toml(tmp_path, 'url = "ftp://from-file"\napi_key = "ck_k"\n')

    def taken(*args: str, env: dict[str, str] | None = None) -> str:
        return one_error_line(invoke("--config", str(path), "workers", "ls", *args, env=env))

    assert "ftp://from-file" in taken()
    assert "ftp://from-env" in taken(env={"CORRAL_URL": "ftp://from-env"})
    assert "ftp://from-flag" in taken("--url", "ftp://from-flag", env={"CORRAL_URL": "ftp://x"})


def test_config_show_says_where_each_value_came_from_and_hides_secrets(
    tmp_path: Path,
) -> None:
    path = toml(
        tmp_path,
        'log_level = "debug"\n[server]\n'
        'bootstrap_admin_key = "ck_bootstrap_secret_0123456789abcdef0123456789"\n'
        'db_url = "postgresql://corral:pw_in_db_url@db/corral"\n',
    )
    env = {
        "CORRAL_API_KEY": "ck_api_secret",
        "CORRAL_WORKER_TOKEN": "wt_token_secret",
        "CORRAL_SERVER__PORT": "9100",
    }
    result = invoke("--config", str(path), "config", "show", env=env)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for secret in SECRETS:
        assert secret not in result.output
    lines = {line.split(" = ")[0]: line for line in out.splitlines() if " = " in line}
    cli = {line.split(" = ")[0]: line  # the CLI's api_key, not the worker's of [worker]
           for line in out.split("[server]")[0].splitlines() if " = " in line}  # fmt: skip
    lines["api_key"] = cli["api_key"]
    assert lines["api_key"].endswith("# env CORRAL_API_KEY") and "<redacted>" in lines["api_key"]
    assert lines["log_level"].endswith(f"# file {path}") and '"debug"' in lines["log_level"]
    assert lines["url"].endswith("# default")
    assert lines["port"].endswith("# env CORRAL_SERVER__PORT") and "9100" in lines["port"]
    assert "<redacted>" in lines["bootstrap_admin_key"]
    assert lines["bootstrap_admin_key"].endswith(f"# file {path}")
    assert "postgresql://corral:<redacted>@db/corral" in lines["db_url"]
    assert lines["token"].endswith("# env CORRAL_WORKER_TOKEN (deprecated)")
    assert "unset" in lines["orchestrator_url"] and "required" in lines["orchestrator_url"]
    assert "[server]" in out and "[worker]" in out and f"# config file: {path}" in out
    assert "use CORRAL_WORKER__TOKEN" in result.stderr


def test_config_show_json_is_one_document(tmp_path: Path) -> None:
    env = {"CORRAL_WORKER__TOKEN": "wt_token_secret",
           "CORRAL_SERVER__BOOTSTRAP_ADMIN_KEY": "ck_bootstrap_secret_0123456789abcdef0123456789",
           "CORRAL_API_KEY": "ck_api_secret"}  # fmt: skip
    result = invoke("config", "show", "--json", env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # one document and nothing else
    assert set(doc) == {"file", "cli", "server", "worker"} and doc["file"] is None
    for secret in SECRETS:
        assert secret not in result.output
    assert doc["worker"]["token"] == {
        "value": "<redacted>",
        "source": "env CORRAL_WORKER__TOKEN",
        "env": "CORRAL_WORKER__TOKEN",
        "required": False,
    }
    assert doc["worker"]["orchestrator_url"]["value"] is None
    assert doc["cli"]["api_key"]["value"] == "<redacted>"
    assert doc["server"]["events_retention_days"] == {
        "value": 30.0,
        "source": "default",
        "env": "CORRAL_SERVER__EVENTS_RETENTION_DAYS",
        "required": False,
    }


def test_help_names_the_new_variables() -> None:
    wide = {"COLUMNS": "250"}
    worker_help = invoke("worker", "--help", env=wide).stdout
    for key in ("ORCHESTRATOR_URL", "TOKEN", "NAME", "LABELS", "MAX_CONCURRENT_TASKS",
                "PERSISTENT", "HEARTBEAT_INTERVAL_S", "DATA_DIR"):  # fmt: skip
        assert f"CORRAL_WORKER__{key}" in worker_help
    assert "CORRAL_WORKER_TOKEN" not in worker_help
    server_help = invoke("server", "--help", env=wide).stdout
    assert "CORRAL_SERVER__ACCESS_LOG" in server_help and "--access-log" in server_help
    assert "CORRAL_CONFIG" in invoke("--help", env=wide).stdout


def test_server_timings_that_would_reap_healthy_workers_are_refused() -> None:
    from corral.server.config import ServerSettings

    with pytest.raises(ConfigError, match="at most half of heartbeat_timeout_s"):
        ServerSettings.load({"heartbeat_interval_s": 30, "heartbeat_timeout_s": 40})
    with pytest.raises(ConfigError, match="reaper_interval_s"):
        ServerSettings.load({"reaper_interval_s": 200})
    fast = {"heartbeat_interval_s": 1, "heartbeat_timeout_s": 3, "reaper_interval_s": 0.5}
    assert ServerSettings.load(fast).heartbeat_timeout_s == 3


def test_a_bootstrap_key_too_short_to_be_a_secret_is_refused() -> None:
    from pydantic import ValidationError

    from corral.server.config import ServerSettings

    with pytest.raises(ValidationError) as refused:
        ServerSettings(bootstrap_admin_key="admin")  # type: ignore[arg-type]
    assert "bootstrap_admin_key" in str(refused.value) and "too short" in str(refused.value)
    ok = ServerSettings(bootstrap_admin_key="ck_" + "x" * 29)  # type: ignore[arg-type]
    assert ok.bootstrap_admin_key is not None


def test_a_session_left_in_a_transaction_ends_well_inside_the_heartbeat_timeout() -> None:
    # A frozen coordinator's locks on a worker's row hold that worker's heartbeats through
    # another coordinator until PostgreSQL ends its session: that must come first.
    for timeout, statement in [(6, 3), (120, 30), (30, 60), (2, 1)]:
        s = ServerSettings(
            heartbeat_timeout_s=timeout, heartbeat_interval_s=timeout / 4,
            reaper_interval_s=timeout / 8, db_statement_timeout_s=statement,
        )  # fmt: skip
        idle = s.db_timeouts().idle_in_transaction_s
        assert idle <= timeout / 3 or idle == 1.0, (timeout, statement, idle)
        assert idle <= 2 * statement


def test_a_worker_has_one_kind_of_credential(tmp_path: Path) -> None:
    from corral.config._file import ConfigError

    base = {"orchestrator_url": "http://c:1", "data_dir": tmp_path / "w"}
    with pytest.raises(ConfigError, match="not both"):
        WorkerSettings.load({**base, "worker_token": "wt_x", "api_key": "ck_x"})
    assert "a worker token is needed" in (WorkerSettings.load(base).missing_credentials() or "")
    s = WorkerSettings.load({**base, "registration_token": "wr_x\n"})
    assert s.missing_credentials() is None and s.secrets() == ["wr_x"]
    # A worker that enrolled before needs nothing more: it holds its certificate.
    s.identity_file.parent.mkdir(parents=True)
    s.identity_file.write_text("{}")
    assert WorkerSettings.load(base).missing_credentials() is None


def test_a_worker_profile_presets_values_that_every_other_setting_overrides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = toml(tmp_path, '[worker]\norchestrator_url = "http://x:1"\nprofile = "light"\n'
                'max_cpu_percent = 70\n')  # fmt: skip
    monkeypatch.setenv("CORRAL_CONFIG", str(path))
    monkeypatch.setenv("CORRAL_WORKER__TASK_TIMEOUT_S", "90")
    s = WorkerSettings.load({"max_concurrent_tasks": 3}, partial=True)
    assert (s.profile, s.max_concurrent_tasks, s.task_timeout_s, s.max_cpu_percent) == (
        "light", 3, 90, 70,
    )  # fmt: skip
    assert s.max_memory_percent == 85  # the profile's own, nothing said otherwise
    assert {k: str(s.origins[k]) for k in ("max_memory_percent", "max_concurrent_tasks",
                                           "task_timeout_s", "max_cpu_percent")} == {
        "max_memory_percent": "profile light", "max_concurrent_tasks": "flag",
        "task_timeout_s": "env CORRAL_WORKER__TASK_TIMEOUT_S", "max_cpu_percent": f"file {path}",
    }  # fmt: skip
    bench = WorkerSettings.load({"profile": "benchmark"}, partial=True)
    assert (bench.max_concurrent_tasks, bench.prefetch, bench.call_prefetch) == (1, 0, 0)
    with pytest.raises(ConfigError, match="profile"):
        WorkerSettings.load({"profile": "fast"}, partial=True)
