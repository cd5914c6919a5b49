"""The coordinator's configuration: ``CORRAL_SERVER__<KEY>`` or ``[server]`` in the config
file (see corral.config for the order)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator

from corral.config import Section, section_config
from corral.server.tokens import looks_like_token
from corral.store import Timeouts, default_url

MIN_BOOTSTRAP_KEY = 32  # characters


class ServerSettings(Section):
    model_config = section_config("server")
    deprecated_env = {"CORRAL_BOOTSTRAP_ADMIN_KEY": "bootstrap_admin_key"}

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    data_dir: Path = Path(".corral")
    db_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default SQLite in data_dir"
    )
    heartbeat_interval_s: float = Field(default=30, gt=0, description="told to workers")
    heartbeat_timeout_s: float = Field(default=120, gt=0, description="silence before OFFLINE")
    # A killed worker's jobs run elsewhere within stream_grace_s + reaper_interval_s + the
    # first retry backoff (about 8 s); a worker that merely reconnects does so in well under.
    stream_grace_s: float = Field(
        default=6, ge=0, description="a worker whose stream dropped goes OFFLINE after this"
    )
    unclaimed_grace_s: float = Field(
        default=30, ge=0, description="an attempt its worker does not list after this is lost"
    )
    reaper_interval_s: float = Field(default=2, gt=0)
    reserve_after_s: float = Field(
        default=300, ge=0, description="a job that fits nowhere after waiting this long holds a"
        " worker it could fit on: nothing queued after it goes there (docs/scheduling.md)",
    )  # fmt: skip
    retry_backoff_base_s: float = Field(default=1, ge=0)
    retry_backoff_cap_s: float = Field(default=60, ge=0)
    ephemeral_ttl_s: float = Field(default=3600, ge=0, description="offline ephemeral workers")
    events_retention_days: float = Field(
        default=30, ge=0, description="how long a job's and a worker's history is kept"
    )
    access_log: bool = Field(default=False, description="uvicorn's access log, one line a request")
    ssl: bool = Field(
        default=False, description="serve HTTPS with a certificate of the internal CA"
        " (<data_dir>/pki/ca.pem is what clients trust), unless ssl_certfile is given",
    )  # fmt: skip
    ssl_certfile: Path | None = Field(default=None, description="serve HTTPS with this certificate")
    ssl_keyfile: Path | None = Field(default=None, description="the certificate's private key")
    ssl_hosts: list[str] = Field(
        default=[], max_length=64,
        description="more names or addresses for the internal CA's server certificate",
    )  # fmt: skip
    job_log_max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024 * 1024,
        description="a job's stored output; past it the first and last halves are kept",
    )  # fmt: skip
    metric_points_max: int = Field(
        default=1_000_000, ge=0, le=10**9,
        description="points of metrics (corral.sdk.report) one job stores; past it, its log"
        " still has them",
    )  # fmt: skip
    blob_store: str | None = Field(
        default=None, description="where jobs' packed directories, checkpoints and outputs go:"
        " a directory or an fsspec URL (s3://bucket/corral); default <data_dir>/blobs. The"
        " coordinators of one database need one that each of them reaches",
    )  # fmt: skip
    blob_max_bytes: int = Field(
        default=20 * 1024**3, ge=1024 * 1024, le=2**50,
        description="one upload: a packed working directory, a checkpoint, an output",
    )  # fmt: skip
    blob_deadline_s: float = Field(
        default=3600, gt=0, le=7 * 86400, description="an upload not whole by then is answered 408"
    )
    auth_failures_per_minute: int = Field(
        default=30, ge=1, le=1_000_000,
        description="refused authentications from one address in a minute before it is"
                    " answered 429 until the minute has passed; each is in the audit log",
    )  # fmt: skip
    self_onboarding: bool = Field(
        default=False, description="anyone may onboard a tenant (POST /api/onboard), rate-limited"
    )
    self_onboarding_per_hour: int = Field(
        default=5, ge=1, le=10_000, description="self-service onboardings from one address an hour"
    )
    follow_streams_per_key: int = Field(
        default=64, ge=1, le=100_000,
        description="followed logs or histories and long polls one API key may hold open"
                    " on a coordinator at once; past it 429",
    )  # fmt: skip
    max_request_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024 * 1024, le=2**31 - 1,
        description="a request body past it is refused (413) before it is read whole",
    )  # fmt: skip
    header_timeout_s: float = Field(
        default=10, gt=0, le=3600,
        description="a request whose headers are not whole this long after its first byte (or"
        " after its connection opened) is answered 408 and its connection closed",
    )  # fmt: skip
    body_timeout_s: float = Field(
        default=30, gt=0, le=3600,
        description="a request body whose next part takes longer to arrive is answered 408",
    )  # fmt: skip
    body_deadline_s: float = Field(
        default=120, gt=0, le=86400,
        description="a request body not whole this long after it began is answered 408",
    )  # fmt: skip
    worker_cert_s: int = Field(
        default=86400, ge=5, le=366 * 86400,
        description="how long a worker's certificate lasts; it renews after two thirds",
    )  # fmt: skip
    registration_ttl_s: int = Field(
        default=600, ge=10, le=7 * 86400,
        description="how long a single-use registration token can be enrolled with",
    )  # fmt: skip
    db_connect_timeout_s: float = Field(default=5, gt=0, le=300)
    db_statement_timeout_s: float = Field(
        default=30, gt=0, le=3600, description="past it a statement fails: 503, retry"
    )
    db_pool_timeout_s: float = Field(default=10, gt=0, le=300)
    bootstrap_admin_key: SecretStr | None = Field(
        default=None, description="made a valid admin key on every start"
    )
    dashboard_session_s: int = Field(
        default=8 * 3600, ge=300, le=24 * 3600,
        description="how long a dashboard login lasts (its session token's life)",
    )  # fmt: skip
    metrics_token: SecretStr | None = Field(
        default=None,
        description="a bearer token that may read GET /metrics (else an operator's key)",
    )

    @field_validator("bootstrap_admin_key", "metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # A short key can be guessed; this one is an admin's.
        if value is not None and len(value.get_secret_value().strip()) < MIN_BOOTSTRAP_KEY:
            raise ValueError(
                f"is too short to be a secret: at least {MIN_BOOTSTRAP_KEY} characters"
                " (python -c 'import secrets; print(\"ck_\" + secrets.token_urlsafe(32))')"
            )
        if value is not None and looks_like_token(value.get_secret_value().strip()):
            raise ValueError("looks like an API token (a JWT): it would be taken for one")
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> ServerSettings:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.ssl or self.ssl_certfile is not None

    @model_validator(mode="after")
    def _timings_agree(self) -> ServerSettings:
        # A worker that misses one beat, or whose one request is slow, must not be reaped:
        # its interval and its request timeout (a third of this, see RegisterResponse) fit
        # inside the heartbeat timeout. The reaper must look more often than that too.
        if self.heartbeat_interval_s * 2 > self.heartbeat_timeout_s:
            raise ValueError(
                f"heartbeat_interval_s ({self.heartbeat_interval_s:g}) must be at most half"
                f" of heartbeat_timeout_s ({self.heartbeat_timeout_s:g}): a worker that misses"
                " one beat would be reaped"
            )
        if self.reaper_interval_s * 4 > self.heartbeat_timeout_s:
            raise ValueError(
                f"reaper_interval_s ({self.reaper_interval_s:g}) must be at most a quarter of"
                f" heartbeat_timeout_s ({self.heartbeat_timeout_s:g}): the reaper must look"
                " often enough to tell its own stall from a worker's silence"
            )
        return self

    def blob_location(self) -> str:
        return self.blob_store or str(self.data_dir / "blobs")

    def database_url(self) -> str:
        return self.db_url or default_url(self.data_dir)

    def db_timeouts(self) -> Timeouts:
        return Timeouts(
            connect_s=self.db_connect_timeout_s,
            statement_s=self.db_statement_timeout_s,
            pool_s=self.db_pool_timeout_s,
            # A coordinator frozen (or cut off) in the middle of a transaction holds its
            # locks until PostgreSQL ends that session: a worker whose row it holds cannot
            # beat through another coordinator meanwhile, so the session must end well
            # inside the worker's heartbeat timeout.
            idle_in_transaction_s=max(
                1.0, min(2 * self.db_statement_timeout_s, self.heartbeat_timeout_s / 3)
            ),
        )
