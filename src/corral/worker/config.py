"""The worker's settings, and the labels syntax its flags and env vars share."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from corral.config import Section, section_config
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
    max_concurrent_tasks: int = Field(default=1, ge=1, le=1024)
    prefetch: int | None = Field(
        default=None, ge=0, le=1024,
        description="call tasks (asking no GPU) held beyond the slots, each waiting for one,"
        " so that the next starts as one ends (default: four times the slots)",
    )  # fmt: skip
    persistent: bool = False
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
