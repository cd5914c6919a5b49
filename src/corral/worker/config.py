"""The worker's settings, and the labels syntax its flags and env vars share."""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource

from corral.config import Section, section_config
from corral.config._sources import DeprecatedEnvSource, Origin, Recorded
from corral.worker.isolation import parse_range

__all__ = ["WorkerSettings", "parse_labels"]

_LABEL_KEY = re.compile(r"^[A-Za-z0-9_.\-/]{1,100}$")


def parse_labels(text: str) -> dict[str, str]:
    """``"gpu=a100,zone=eu"`` -> ``{"gpu": "a100", "zone": "eu"}``; empty text -> ``{}``."""
    labels: dict[str, str] = {}
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"label {part!r} is not key=value (expected e.g. 'gpu=a100,zone=eu')")
        if not _LABEL_KEY.match(key):
            raise ValueError(
                f"label key {key!r} may hold only letters, digits and _ . - / (at most 100)"
            )
        if len(value) > 200:
            raise ValueError(f"label {key!r}: value longer than 200 characters")
        if key in labels:
            raise ValueError(f"label {key!r} is given twice")
        labels[key] = value
    return labels


PREFETCH_PER_SLOT = 4  # the default prefetch, per slot


def _cores() -> int:
    return os.cpu_count() or 1


# Execution profiles (``--profile``): presets below every flag, variable and file value, so
# each of their values is overridden by its own setting. Sizes follow this machine's cores.
PROFILES: dict[str, Callable[[], dict[str, Any]]] = {
    # A benchmark wants the machine to itself: one job at a time, nothing waiting beside it.
    "benchmark": lambda: {"max_concurrent_tasks": 1, "prefetch": 0, "task_timeout_s": 3600.0,
                          "memory_buffer": 0.1},
    # Test suites: half the cores, each suite within half an hour, memory kept in check.
    "test": lambda: {"max_concurrent_tasks": max(1, _cores() // 2), "task_timeout_s": 1800.0,
                     "max_memory_percent": 90.0},
    # Many small tasks: two a core, short, and no new one while the machine is saturated.
    "light": lambda: {"max_concurrent_tasks": min(1024, 2 * _cores()), "task_timeout_s": 600.0,
                      "max_cpu_percent": 95.0, "max_memory_percent": 85.0},
}  # fmt: skip


class ProfileSource(PydanticBaseSettingsSource):
    """The values of the profile named by the sources above it, below all of them."""

    def __init__(self, settings_cls: type[BaseSettings], above: Sequence[Any]) -> None:
        super().__init__(settings_cls)
        self.above = above
        self.name: str | None = None

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, "", False  # __call__ gives them all

    def __call__(self) -> dict[str, Any]:
        self.name = next((v for s in self.above if (v := s().get("profile")) is not None), None)
        preset = PROFILES.get(str(self.name)) if self.name is not None else None
        return preset() if preset is not None else {}  # an unknown name: the field says so


class WorkerSettings(Section):
    """Everything ``corral worker`` needs: ``CORRAL_WORKER__<KEY>`` or ``[worker]`` in the
    config file (see corral.config). The token is a SecretStr: hidden in repr and logs."""

    model_config = section_config("worker")
    deprecated_env = {
        "CORRAL_ORCHESTRATOR_URL": "orchestrator_url",
        "CORRAL_WORKER_TOKEN": "token",
        "CORRAL_WORKER_NAME": "name",
        "CORRAL_WORKER_LABELS": "labels",
        "CORRAL_MAX_CONCURRENT_TASKS": "max_concurrent_tasks",
        "CORRAL_WORKER_PERSISTENT": "persistent",
        "CORRAL_HEARTBEAT_INTERVAL": "heartbeat_interval_s",
        "CORRAL_WORKER_DATA_DIR": "data_dir",
        "CORRAL_WORKER_KILL_GRACE": "kill_grace_s",
        "CORRAL_WORKER_PASS_ENV": "pass_env",
    }

    orchestrator_url: str = Field(
        description="coordinator URL; several, comma-separated, fail over in order",
    )
    # Its key is "token": CORRAL_WORKER__TOKEN, `token` under [worker].
    worker_token: SecretStr | None = Field(default=None, validation_alias="CORRAL_WORKER__TOKEN")
    # Or a certificate (worker.identity): enrolled with an API key or a registration token.
    api_key: SecretStr | None = Field(
        default=None, description="enrol with a certificate, asking with this API key"
    )
    registration_token: SecretStr | None = Field(
        default=None, description="enrol with a certificate, with this single-use token"
    )
    name: str | None = Field(default=None, description="default: hostname")
    labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="k=v,k2=v2"
    )
    profile: Literal["benchmark", "test", "light"] | None = Field(
        default=None, description="a preset of slots, limits and timeouts; each value is"
        " overridden by its own setting",
    )  # fmt: skip
    max_concurrent_tasks: int = Field(default=1, ge=1, le=1024)
    prefetch: int | None = Field(
        default=None, ge=0, le=1024,
        description="call tasks (asking no GPU) held beyond the slots, each waiting for one,"
        " so that the next starts as one ends (default: four times the slots)",
    )  # fmt: skip
    persistent: bool = False
    tags: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="a,b: labels with no value (jobs ask with --tags)"
    )
    gpu_ids: Annotated[list[str] | None, NoDecode] = Field(
        default=None, description="the GPUs it owns, by index or uuid (default:"
        " CUDA_VISIBLE_DEVICES, else all); two workers can share a machine",
    )  # fmt: skip
    db_path: Path | None = Field(
        default=None, description="a DuckDB file of the results this worker produced, one row"
        " a finished attempt (needs duckdb)",
    )  # fmt: skip
    memory_buffer: float = Field(
        default=0.0, ge=0, le=0.9, description="share of memory no job's memory_gb may claim"
    )
    max_cpu_percent: float | None = Field(
        default=None, gt=0, le=100, description="above it, no new work until it cools down"
    )
    max_memory_percent: float | None = Field(
        default=None, gt=0, le=100, description="above it, no new work until it cools down"
    )
    max_gpu_percent: float | None = Field(
        default=None, gt=0, le=100,
        description="above it (any of its GPUs), no new work until it cools down",
    )  # fmt: skip
    cooldown_s: float = Field(
        default=30.0, ge=0, le=3600,
        description="after a limit was passed, how long all must stay under it first",
    )  # fmt: skip
    task_timeout_s: float | None = Field(
        default=None, gt=0, le=30 * 86400,
        description="the longest any attempt runs here (a job's own timeout if shorter)",
    )  # fmt: skip
    heartbeat_interval_s: float = Field(default=30.0, gt=0, le=3600)
    data_dir: Path | None = Field(default=None, description="default: ~/.corral/worker/<name>")
    kill_grace_s: float = Field(
        default=10.0, ge=0, le=3600, description="between SIGTERM and SIGKILL of a job"
    )
    log_flush_stall_s: float = Field(
        default=15.0, gt=0, le=3600,
        description="a finished job's output ships before its report while batches go"
        " through; after this long without one the report goes anyway",
    )  # fmt: skip
    pass_env: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="extra env var names passed from the worker to its jobs",
    )
    ca_file: Path | None = Field(
        default=None, description="trust only this CA for https:// coordinators (pki/ca.pem)"
    )
    run_as_users: str | None = Field(
        default=None,
        description="FIRST-LAST uids: each attempt runs as a free one of them (the worker as"
        " root); the first this worker holds is the warm interpreters' of call tasks; uids"
        " another worker on the host holds are skipped",
    )
    sandbox: Literal["off", "on", "auto"] = Field(
        default="off",
        description="run each attempt in user, mount and PID namespaces that hide this"
        " worker's data directory and sandbox_hide from it (auto: where the machine allows)",
    )  # fmt: skip
    sandbox_hide: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="more directories a sandboxed job cannot see"
    )
    ssl_no_verify: bool = Field(
        default=False, description="do not check the coordinator's certificate (development)"
    )
    metrics_host: str = Field(
        default="127.0.0.1", min_length=1,
        description="where /metrics and /health listen (0.0.0.0: every address)",
    )  # fmt: skip
    metrics_port: int = Field(
        default=2112, ge=0, le=65535, description="the port of /metrics and /health; 0: none"
    )
    ui: bool = Field(default=False, description="serve the worker's own page (status, pause)")
    ui_host: str = Field(
        default="127.0.0.1", min_length=1,
        description="where the page listens: loopback unless told otherwise",
    )  # fmt: skip
    ui_port: int = Field(default=5000, ge=0, le=65535, description="the page's port; 0: a free one")

    @field_validator("orchestrator_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        urls = [u.strip() for u in value.split(",") if u.strip()]
        if not urls:
            raise ValueError("at least one coordinator URL is needed")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return ",".join(urls)

    @field_validator("worker_token", "api_key", "registration_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        # Pasted tokens often carry a newline; a header with one is refused by httpx.
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("is empty")
        return SecretStr(token)

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_labels(value)
        if isinstance(value, list | tuple):  # repeated --label k=v flags
            return parse_labels(",".join(str(v) for v in value))
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        for tag in value or []:
            if not isinstance(tag, str) or not _LABEL_KEY.match(tag):
                raise ValueError(
                    f"tag {tag!r} may hold only letters, digits and _ . - / (at most 100)"
                )
        return value

    @field_validator("gpu_ids", mode="before")
    @classmethod
    def _gpu_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("sandbox_hide", mode="before")
    @classmethod
    def _hide(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [Path(v.strip()) for v in value.split(",") if v.strip()]
        return value

    @field_validator("pass_env", mode="before")
    @classmethod
    def _pass_env(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("run_as_users")
    @classmethod
    def _users(cls, value: str | None) -> str | None:
        if value is not None:
            parse_range(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = super().settings_customise_sources(
            settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
        )
        # The deprecated variables name no profile; the rest may.
        profile = ProfileSource(
            settings_cls,
            [s for s in sources if not isinstance(getattr(s, "inner", None), DeprecatedEnvSource)],
        )
        return (*sources, Recorded(profile, lambda key: Origin("profile", profile.name)))

    @property
    def labels_with_tags(self) -> dict[str, str]:
        """Its labels, and its tags as labels with no value."""
        return {**dict.fromkeys(self.tags, ""), **self.labels}

    @property
    def users(self) -> range | None:
        return parse_range(self.run_as_users) if self.run_as_users else None

    @model_validator(mode="after")
    def _enough_users(self) -> WorkerSettings:
        users = self.users
        if users is not None and len(users) < self.max_concurrent_tasks + 1:
            raise ValueError(
                f"run_as_users {self.run_as_users} has {len(users)} uids: it needs one per slot"
                f" ({self.max_concurrent_tasks}) and one for call tasks"
            )
        return self

    @model_validator(mode="after")
    def _defaults(self) -> WorkerSettings:
        if not self.name:
            self.name = platform.node() or "worker"
        if self.data_dir is None:
            self.data_dir = Path.home() / ".corral" / "worker" / _safe(self.name)
        self.data_dir = self.data_dir.expanduser()
        return self

    @model_validator(mode="after")
    def _credentials(self) -> WorkerSettings:
        enrols = self.api_key is not None or self.registration_token is not None
        if self.worker_token is not None and enrols:
            raise ValueError("a worker token, or an API key / registration token to enrol with"
                             " a certificate: not both")  # fmt: skip
        return self

    def missing_credentials(self) -> str | None:
        """Why this worker cannot prove itself, or None: a token, an API key or registration
        token to enrol with, or a certificate it enrolled with before (with a registration
        token: it keeps that one on disk)."""
        enrols = self.api_key is not None or self.registration_token is not None
        if self.worker_token is None and not enrols and not self.identity_file.exists():
            return ("a worker token is needed (CORRAL_WORKER__TOKEN, from corral workers"
                    " create), or --api-key / --registration-token to enrol with a"
                    " certificate")  # fmt: skip
        return None

    @property
    def identity_file(self) -> Path:
        """What a worker enrolled with a certificate holds (``corral.worker.identity``)."""
        return self.work_dir / "identity" / "identity.json"

    def secrets(self) -> list[str]:
        """What no job may be handed, even by name (``--pass-env``)."""
        held = (self.worker_token, self.api_key, self.registration_token)
        return [s.get_secret_value() for s in held if s is not None]

    @property
    def call_prefetch(self) -> int:
        """How many call tasks it holds beyond its slots (``prefetch``, else four times its
        slots: docs/PERFORMANCE.md has what each depth gave)."""
        if self.prefetch is not None:
            return self.prefetch
        return min(PREFETCH_PER_SLOT * self.max_concurrent_tasks, 1024)

    @property
    def urls(self) -> list[str]:
        return self.orchestrator_url.split(",")

    @property
    def work_dir(self) -> Path:
        """``data_dir``, known to be set once validated."""
        assert self.data_dir is not None
        return self.data_dir

    @property
    def worker_name(self) -> str:
        assert self.name is not None
        return self.name


def _safe(name: str) -> str:
    """A name usable as one path component."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "_", name).strip(".")
    return cleaned or "worker"
