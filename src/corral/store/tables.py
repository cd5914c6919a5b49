"""The schema, as SQLAlchemy Core tables. Every table holding a tenant's data has tenant_id."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = String(40)
TS = DateTime(timezone=True)

tenants = Table(
    "tenants",
    metadata,
    Column("id", Id, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("status", String(20), nullable=False, server_default="active"),  # TenantStatus
    Column("created_at", TS, nullable=False),
    Column("suspended_at", TS),
    # Quotas its operator set (None: no cap): jobs running at once, GPUs they hold.
    Column("max_running_jobs", Integer),
    Column("max_gpus", Integer),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),  # model.Role
    # The key's first characters, shown so that a person can tell keys apart ("ck_3fA9…").
    Column("prefix", String(20)),
    Column("expires_at", TS),
    Column("last_used_at", TS),
    Column("created_at", TS, nullable=False),
    UniqueConstraint("tenant_id", "name", name="uq_api_keys_tenant_name"),
)

# The secrets that sign short-lived API tokens (JWT, HS256), by key id: shared by every
# coordinator of a store; the newest signs, any one still stored verifies.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("secret", String(100), nullable=False),
    Column("created_at", TS, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("worker_type", String(20), nullable=False),
    Column("labels", JSON, nullable=False),  # in effect: the admin's, and what it allowed
    # What its admin set at creation (authoritative), and the label keys (globs) the worker
    # may set for itself at register.
    Column("admin_labels", JSON, nullable=False, server_default="{}"),
    Column("allowed_labels", JSON, nullable=False, server_default="[]"),
    Column("status", String(20), nullable=False),
    Column("hostname", String(255)),
    # The address its register came from: a gang's rank 0 is met there (MASTER_ADDR).
    Column("address", String(100)),
    Column("cpu_count", Integer),
    Column("cpu_model", String(200)),
    Column("memory_bytes", BigInteger),
    # The share of its memory that no job's memory_gb may claim (its --memory-buffer).
    Column("memory_buffer", Float, nullable=False, server_default="0"),
    Column("accelerator", String(10), nullable=False, server_default="cpu"),  # cpu cuda rocm mps
    Column("gpus", JSON, nullable=False),  # protocol.GpuInfo, as it detected them
    Column("slots", Integer, nullable=False),
    # Call tasks it holds beyond its slots, each waiting on it for one (RegisterRequest).
    Column("prefetch", Integer, nullable=False, server_default="0"),
    # Jobs handed out since the last register: an ephemeral worker takes exactly one.
    Column("taken_since_register", Integer, nullable=False, server_default="0"),
    Column("last_heartbeat", TS),
    # "<coordinator instance>:<session>" of its open event stream, so that a coordinator
    # whose stream dropped does not reap a worker that has since connected to another.
    Column("stream_owner", String(100)),
    Column("offline_since", TS),
    # Why it takes no new work, as it said in its last heartbeat (its disk is full…).
    Column("constrained", String(500)),
    # A coordinator's own (``corral up``, ``corral server --local-workers``), as its admin
    # said when creating it: where jobs of target "local" run, and "auto" ones last.
    Column("local", Boolean, nullable=False, server_default=false()),
    # An operator's worker that serves every tenant (the shared pool), as created.
    Column("shared", Boolean, nullable=False, server_default=false()),
    # Set by its admin (pause), cleared by resume: no new work meanwhile; running work goes on.
    Column("paused_at", TS),
    # The worker's clock at the newest of its requests taken (see RegisterRequest.sent_ns).
    Column("heard_ns", BigInteger),
    Column("created_at", TS, nullable=False),
    # A worker enrolled with a certificate: the one the coordinator signed for its key, and
    # when it ends. Its ``token_hash`` is then the key's fingerprint (protocol.signing).
    Column("cert_pem", Text),
    Column("cert_expires_at", TS),
    Index("ix_workers_tenant_status", "tenant_id", "status"),
)

# Single-use registration tokens: an API key's holder asks for one, a worker trades it and a
# CSR for a certificate (docs/SECURITY.md "Enrolment with a certificate").
registrations = Table(
    "registrations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("spec", JSON, nullable=False),  # the worker it enrols: a WorkerCreate
    Column("created_by", Id),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("used_at", TS),
    Index("ix_registrations_expires", "expires_at"),
)

# The nonces of signed worker requests still inside their window: one seen again is a replay.
worker_nonces = Table(
    "worker_nonces",
    metadata,
    Column("worker_id", Id, primary_key=True),
    Column("nonce", String(32), primary_key=True),
    Column("expires_at", TS, nullable=False),
    Index("ix_worker_nonces_expires", "expires_at"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("tenant_id", Id, ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("command", JSON, nullable=False),  # [] for a job of kind "call"
    Column("call", JSON),  # what a "call" job runs (protocol.CallSpec)
    Column("env", JSON, nullable=False),
    Column("worker_labels", JSON, nullable=False),
    Column("gpus", Integer, nullable=False),
    # Counted while it runs, against its worker's cores and memory.
    Column("cpus", Float, nullable=False, server_default="0"),
    Column("memory_gb", Float, nullable=False, server_default="0"),
    # What else its worker must be (tags, accelerator, gpu_name, gpu_memory_gb); None: nothing.
    Column("requires", JSON),
    # The GPUs its current attempt holds (the attempt's row keeps them for the record).
    Column("gpu_ids", JSON),
    # A gang (multi-node training): ``nodes`` members, each a job of its own with its
    # ``rank``, placed together or not at all; ``gang_id`` is rank 0's id (the gang's).
    Column("nodes", Integer, nullable=False, server_default="1"),
    # May be stopped for a higher-priority job (and queued again, no retry used); how often.
    Column("preemptible", Boolean, nullable=False, server_default=false()),
    Column("preemptions", Integer, nullable=False, server_default="0"),
    Column("gang_id", Id),
    Column("rank", Integer),
    # Where its gang meets (MASTER_ADDR, MASTER_PORT), set with its current attempt.
    Column("rendezvous", JSON),
    # The SHA-256 of its packed working directory (a blob of its tenant), unpacked where each
    # attempt runs; None: it runs in an empty directory.
    Column("workdir", String(64)),
    # Lines of a requirements file: the Python environment each attempt runs in (None: the
    # worker's own).
    Column("requirements", JSON),
    Column("params", JSON),  # its parameters (a train job's config), CORRAL_PARAMS to it
    Column("outputs", JSON),  # globs of the files stored as its artifacts when it succeeds
    Column("priority", Integer, nullable=False),
    Column("max_retries", Integer, nullable=False),
    Column("timeout_s", Float),
    Column("state", String(20), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("worker_id", Id, ForeignKey("workers.id", ondelete="SET NULL")),
    Column("not_before", TS),
    Column("idempotency_key", String(200)),
    # SHA-256 of the submitted request: a key reused with another request is refused.
    Column("request_hash", String(64)),
    # Its stored output, capped: the first half of the cap is kept whole, then the newest
    # output; log_cut_after is the last chunk before the gap, log_cut_bytes what it holds.
    Column("log_bytes", BigInteger, nullable=False, server_default="0"),
    Column("log_cut_after", Integer),
    Column("log_cut_bytes", BigInteger, nullable=False, server_default="0"),
    # How many points of metrics it has stored (``metrics``), against its cap.
    Column("metric_points", BigInteger, nullable=False, server_default="0"),
    Column("created_at", TS, nullable=False),
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("exit_code", Integer),
    Column("error", Text),
    Column("result", JSON),
    # Claim order: highest priority first, then oldest.
    Index("ix_jobs_queue", "state", "priority", "created_at"),
    # A dispatch round with every slot taken looks only for queued calls asking no GPU (those
    # a busy worker may hold): found by this index, not by walking the whole queue.
    Index("ix_jobs_queue_kind", "state", "kind", "gpus", "priority", "created_at"),
    Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
    Index("ix_jobs_worker_state", "worker_id", "state"),
    Index("ix_jobs_gang", "gang_id"),
    UniqueConstraint("tenant_id", "idempotency_key", name="uq_jobs_tenant_idempotency"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("tenant_id", Id, nullable=False),
    Column("worker_id", Id),
    Column("outcome", String(20)),
    Column("assigned_at", TS, nullable=False),
    Column("started_at", TS),
    Column("finished_at", TS),
    Column("exit_code", Integer),
    Column("error", Text),
    # The worker's clock when it made the newest report taken for this attempt.
    Column("reported_ns", BigInteger),
    Column("gpu_ids", JSON),  # the GPUs the coordinator gave it
)

log_chunks = Table(
    "log_chunks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("tenant_id", Id, nullable=False),
    Column("data", Text, nullable=False),
    Column("size", Integer, nullable=False, server_default="0"),  # bytes of data as UTF-8
    UniqueConstraint("job_id", "attempt", "seq", name="uq_log_chunks_job_attempt_seq"),
    # Ids are SSE ids that clients resume from: SQLite must never hand one out twice.
    sqlite_autoincrement=True,
)

# The durable outbox of what each worker must hear on its stream; SSE ids are these ids,
# so a reconnect with Last-Event-ID resumes exactly where it stopped.
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("worker_id", Id, ForeignKey("workers.id", ondelete="CASCADE"), nullable=False),
    Column("tenant_id", Id, nullable=False),
    Column("type", String(50), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_outbox_worker_id", "worker_id", "id"),
    sqlite_autoincrement=True,  # see log_chunks
)

# Every change of a job's or a worker's state, with its cause: the one record that the
# timelines, the log lines and (later) metrics, audit and the dashboard read. No foreign
# keys: a job's or a worker's history outlives it, up to the retention.
history = Table(
    "history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", Id, nullable=False),
    Column("at", TS, nullable=False),
    Column("kind", String(50), nullable=False),
    Column("job_id", Id),
    Column("worker_id", Id),
    Column("attempt", Integer),
    Column("from_state", String(20)),
    Column("to_state", String(20)),
    Column("reason", String(50)),
    Column("message", Text),
    Column("cause", String(64), nullable=False),
    Column("actor", String(100)),
    Column("source", String(100)),  # the address the request came from, if one did
    Column("detail", JSON, nullable=False),
    Index("ix_history_job", "job_id", "id"),
    Index("ix_history_worker", "worker_id", "id"),
    Index("ix_history_at", "at"),
    sqlite_autoincrement=True,  # ids are SSE ids of a followed timeline
)

# What a job's attempts stored in the blob store: checkpoints (``resume`` finds the newest)
# and the outputs it declared. The bytes are the blob ``digest`` of the tenant.
artifacts = Table(
    "artifacts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", Id, nullable=False),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("kind", String(20), nullable=False),  # checkpoint, output
    Column("name", String(300), nullable=False),
    Column("step", BigInteger),  # a checkpoint's training step
    Column("digest", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_artifacts_job_id", "job_id", "kind", "id"),
    sqlite_autoincrement=True,
)

# What a job's code reported with corral.sdk.report: a row a metric a step, per attempt,
# read back as series (the dashboard's charts, a sweep's pruning).
metrics = Table(
    "metrics",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tenant_id", Id, nullable=False),
    Column("job_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("step", BigInteger),
    Column("name", String(100), nullable=False),
    Column("value", Float),  # None: the job reported a value that is not finite (NaN)
    Column("at", TS, nullable=False),
    Index("ix_metrics_job_id", "job_id", "name", "id"),
    sqlite_autoincrement=True,
)

# One row that /readyz writes: a store that can no longer take a write is not ready.
probes = Table(
    "probes",
    metadata,
    Column("id", Id, primary_key=True),
    Column("at", TS),
)
