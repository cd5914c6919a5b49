"""Request, response and event schemas shared by the coordinator, the worker and the CLI."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from corral.model import AttemptOutcome, JobState, WorkerStatus, WorkerType
from corral.protocol._wire import MAX_NESTING, unstorable, unstorable_text
from corral.protocol._wire import Wire as _Wire

__all__ = [
    "ACCELERATORS",
    "CALL_KIND",
    "MAX_NESTING",
    "MAX_PARAMS_BYTES",
    "MAX_PICKLED_CHARS",
    "MAX_RESULT_BYTES",
    "Accelerator",
    "ArtifactList",
    "ArtifactView",
    "AttemptRef",
    "AttemptReport",
    "AttemptView",
    "BlobStored",
    "CallSpec",
    "Event",
    "EventList",
    "EventView",
    "Gang",
    "GpuInfo",
    "HeartbeatRequest",
    "HeartbeatResponse",
    "JobAssign",
    "JobCancel",
    "JobList",
    "JobMetrics",
    "JobSubmit",
    "JobView",
    "JobWhy",
    "LogBatch",
    "MetricPoint",
    "MetricSeries",
    "Problem",
    "ProblemField",
    "RegisterRequest",
    "RegisterResponse",
    "ReportAck",
    "ReportBatch",
    "ReportBatchAck",
    "ReportOutcome",
    "WorkerCreate",
    "WorkerCreated",
    "WorkerDrain",
    "WorkerList",
    "WorkerPause",
    "WorkerReport",
    "WorkerVerdict",
    "WorkerView",
    "result_size",
    "unstorable",
    "unstorable_text",
]

Name = Annotated[str, Field(min_length=1, max_length=200)]
# Bounds that every store can hold: a number past them is a 422, never a database error.
Count = Annotated[int, Field(ge=0, le=2**31 - 1)]
Bytes = Annotated[int, Field(ge=0, le=2**62)]
AttemptNo = Annotated[int, Field(ge=1, le=2**31 - 1)]
ExitCode = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
LabelKey = Annotated[str, Field(min_length=1, max_length=100)]
MAX_LABELS = 64
Labels = Annotated[dict[LabelKey, Annotated[str, Field(max_length=200)]],
                   Field(max_length=MAX_LABELS)]  # fmt: skip
MAX_ENV = 256  # variables a job may set
MAX_ENV_VALUE = 64 * 1024  # characters of one variable's value
Env = Annotated[
    dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)],
         Annotated[str, Field(max_length=MAX_ENV_VALUE)]],
    Field(max_length=MAX_ENV),
]  # fmt: skip
_ = (MAX_NESTING, unstorable_text)  # re-exported

# One line of a requirements file ("torch==2.4.0", "-e git+…", "--index-url …"); comments
# and blank lines are left out by the client.
Requirement = Annotated[str, Field(min_length=1, max_length=1000, pattern=r"^[^\n\r\x00]+$")]

MAX_PARAMS_BYTES = 64 * 1024  # as JSON; it travels to the job as CORRAL_PARAMS

CALL_KIND = "call"
# A by-reference pickle of an importable function is ~100 bytes; a by-value one
# (cloudpickle) of a closure a few KiB. What is bigger belongs in a module the worker imports.
MAX_PICKLED_CHARS = 1024 * 1024


class CallSpec(_Wire):
    """What a job of kind ``call`` runs: ``target`` (``package.module:function``) or
    ``pickled`` (a pickled callable, base64), with JSON ``args`` and ``kwargs``."""

    target: str | None = Field(
        default=None, max_length=300, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="module:function, imported once by the worker's warm interpreter",
    )  # fmt: skip
    pickled: str | None = Field(
        default=None, min_length=1, max_length=MAX_PICKLED_CHARS,
        pattern=r"^[A-Za-z0-9+/=]+$", description="base64 of a pickled callable",
    )  # fmt: skip
    args: list[Any] = Field(default=[], max_length=10_000)
    kwargs: dict[Annotated[str, Field(max_length=200)], Any] = Field(default={}, max_length=10_000)

    @field_validator("args", "kwargs")
    @classmethod
    def _json(cls, value: Any) -> Any:
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_callable(self) -> CallSpec:
        if (self.target is None) == (self.pickled is None):
            raise ValueError("give exactly one of target and pickled")
        return self


def _call_or_command(value: Any, info: ValidationInfo) -> Any:
    """kind="call" takes ``call`` and no ``command``; any other kind the other way round.
    Checked on each field (validate_default), so that the 422 names the field at fault."""
    if "kind" not in info.data:
        return value  # the kind itself was refused: that error says enough
    is_call = info.data["kind"] == CALL_KIND
    if info.field_name == "command":
        if is_call and value:
            raise ValueError('a job of kind "call" runs its call, not a command')
        if info.data["kind"] == "command" and not value:
            raise ValueError("a command job needs a command")
        if info.data["kind"] == "train" and (not value or len(value) != 1 or ":" not in value[0]):
            raise ValueError("a train job's command is its module:function, one of it")
    elif is_call and value is None:
        raise ValueError('a job of kind "call" needs call (a target or a pickled function)')
    elif not is_call and value is not None:
        raise ValueError('only a job of kind "call" takes call')
    return value


# ---- worker -> coordinator -------------------------------------------------


Why = Annotated[str, Field(min_length=1, max_length=500)]
# When the worker made a request, by its own clock: only ever compared with its own earlier
# ones. A registration older than a request already taken from it (it waited in a frozen
# coordinator) is refused instead of undoing what came after it.
SentNs = Annotated[int | None, Field(default=None, ge=0, le=2**63 - 1)]


ACCELERATORS = ("cpu", "cuda", "rocm", "mps")
Accelerator = Literal["cpu", "cuda", "rocm", "mps"]


class GpuInfo(_Wire):
    index: int = Field(ge=0, le=1024, description="as the driver numbers it (PCI bus order)")
    name: str = Field(max_length=200)
    memory_bytes: Bytes
    uuid: str | None = Field(default=None, max_length=100)
    driver: str | None = Field(default=None, max_length=100, description="driver version")
    utilization_percent: float | None = Field(
        default=None, ge=0, le=100, description="when the worker registered"
    )


class AttemptRef(_Wire):
    job_id: str = Field(max_length=100)
    attempt: AttemptNo


class RegisterRequest(_Wire):
    name: Name | None = None
    hostname: str = Field(default="", max_length=255)
    cpu_count: Count = 1
    memory_bytes: Bytes = 0
    cpu_model: str = Field(default="", max_length=200)
    accelerator: Accelerator = "cpu"
    gpus: list[GpuInfo] = Field(default=[], max_length=1024)
    memory_buffer: float = Field(
        default=0.0, ge=0, lt=1, description="share of its memory no job's memory_gb may claim"
    )
    labels: Labels = Field(default={}, description="a tag is a label whose value is empty")
    slots: int = Field(default=1, ge=1, le=1024, description="jobs it runs at once")
    prefetch: int = Field(
        default=0, ge=0, le=1024, description="call tasks (asking no GPU) it holds beyond its "
        "slots, each waiting on it for a slot, so that the next starts as one ends",
    )  # fmt: skip
    persistent: bool = False
    running: list[AttemptRef] = Field(
        default=[], max_length=10_000, description="attempts it is still running"
    )
    version: str = Field(default="", max_length=100)
    constrained: Why | None = Field(default=None, description="as in a heartbeat")
    sent_ns: SentNs = None


class RegisterResponse(_Wire):
    worker_id: str
    name: str
    heartbeat_interval_s: float
    heartbeat_timeout_s: float | None = Field(
        default=None, description="silence after which it is offline: its requests time out "
        "well before (a third of this at most), so a fail-over fits inside",
    )  # fmt: skip
    keep: list[AttemptRef] = Field(description="running attempts that are still current")
    stop: list[AttemptRef] = Field(description="running attempts to kill: no longer current")


class HeartbeatRequest(_Wire):
    running: list[AttemptRef] = Field(default=[], max_length=10_000)
    constrained: Why | None = Field(
        default=None, description="why it takes no new work now (its disk is full…); None: it does"
    )
    sent_ns: SentNs = None
    cpu_percent: float | None = Field(default=None, ge=0)
    memory_used_bytes: Bytes | None = None


class HeartbeatResponse(_Wire):
    status: WorkerStatus
    stop: list[AttemptRef] = []


class WorkerPause(_Wire):
    """``POST /api/workers/pause``: a worker asks for no new work (its own page's button),
    or for work again; what it runs goes on."""

    paused: bool


MAX_RESULT_BYTES = 1024 * 1024


def result_size(value: Any) -> int:
    """A result's size as the coordinator counts it: compact UTF-8 JSON."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


class AttemptReport(_Wire):
    """POST /api/workers/job/{id}/status: an attempt started (``running``) or ended; or the
    worker cannot run it (``declined``, with why in ``error``): it runs again elsewhere."""

    attempt: AttemptNo
    status: Literal["running", "declined"] | AttemptOutcome
    exit_code: ExitCode | None = None
    error: str | None = Field(default=None, max_length=10_000)
    result: dict[str, Any] | None = None
    sent_ns: SentNs = None

    @field_validator("status")
    @classmethod
    def _not_lost(cls, value: str) -> str:
        if value == AttemptOutcome.LOST:
            raise ValueError("only the coordinator decides that an attempt is lost")
        return value

    @field_validator("result")
    @classmethod
    def _result_fits(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        # The worker keeps a result file to this size too; a worker that does not is refused
        # here rather than have every listing of the job carry its bytes.
        if value is not None and result_size(value) > MAX_RESULT_BYTES:
            raise ValueError(f"a result is at most {MAX_RESULT_BYTES} bytes of JSON")
        return value


class ReportAck(_Wire):
    job_id: str
    state: JobState


class LogBatch(_Wire):
    """POST /api/workers/job/{id}/logs: the next piece of an attempt's output."""

    attempt: AttemptNo
    seq: Count = Field(description="batch number within the attempt; repeats are ignored")
    data: str = Field(max_length=1024 * 1024, description="a worker sends up to 64 KiB")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        # A process may print anything; keep the text, replace only what cannot be stored.
        if isinstance(data, dict) and isinstance(data.get("data"), str):
            text = data["data"].replace("\x00", "\ufffd")
            text = text.encode("utf-8", "replace").decode("utf-8")
            data = {**data, "data": text}
        return data


# ---- coordinator -> worker (SSE on /api/workers/stream) --------------------


class Gang(_Wire):
    """Where a gang member stands, as torch.distributed reads it from the environment."""

    rank: int = Field(ge=0)
    world_size: int = Field(ge=2)
    master_addr: str = Field(max_length=100, description="rank 0's worker, as it registered")
    master_port: int = Field(ge=1, le=65535, description="rank 0's worker checks it is free")


class JobAssign(_Wire):
    type: Literal["job.assign"] = "job.assign"
    job_id: str
    attempt: int
    name: str
    kind: str = "command"
    command: list[str] = []
    env: dict[str, str] = {}
    timeout_s: float | None = None
    workdir: str | None = None  # its packed working directory's SHA-256; left out when none
    requirements: list[str] | None = None  # what its Python environment holds; None: the worker's
    params: dict[str, Any] | None = None  # its parameters, CORRAL_PARAMS to the job
    outputs: list[str] | None = None  # globs of what to store once it has succeeded
    gpus: int = 0
    gpu_ids: list[int] | None = Field(
        default=None, description="the GPUs it holds, chosen by the coordinator"
    )
    call: CallSpec | None = None  # left out of the event for command jobs
    gang: Gang | None = None  # left out for a job of one node


class JobCancel(_Wire):
    type: Literal["job.cancel"] = "job.cancel"
    job_id: str
    attempt: int
    reason: str = "cancelled"


class WorkerDrain(_Wire):
    type: Literal["worker.drain"] = "worker.drain"


Event = Annotated[JobAssign | JobCancel | WorkerDrain, Field(discriminator="type")]


# ---- users -> coordinator ---------------------------------------------------


class JobSubmit(_Wire):
    name: Name | None = None
    kind: str = Field(default="command", max_length=50, pattern=r"^[a-z][a-z0-9_.-]*$")
    command: list[str] | None = Field(
        default=None, min_length=1, max_length=10_000, validate_default=True,
        description='the program and its arguments; a kind\'s arguments ("test": pytest\'s,'
        ' "train": its module:function); "call" has none',
    )  # fmt: skip
    call: CallSpec | None = Field(
        default=None, validate_default=True, description='what a job of kind "call" runs'
    )
    env: Env = {}
    worker_labels: Labels = Field(default={}, description="label -> glob the worker must match")
    tags: list[LabelKey] = Field(
        default=[], max_length=MAX_LABELS, description="labels the worker must have, any value"
    )
    gpus: int = Field(default=0, ge=0, le=64)
    gpu_memory_gb: float | None = Field(
        default=None, gt=0, le=100_000, description="memory each of its GPUs must have"
    )
    gpu_name: str | None = Field(
        default=None, min_length=1, max_length=200, description="glob its GPUs' names match"
    )
    accelerator: Accelerator | None = Field(default=None, description="the worker's kind")
    target: Literal["worker", "local", "auto"] = Field(
        default="auto", description="worker: remote workers only; local: the coordinator's own;"
        " auto: remote ones first, local ones when none can take it",
    )  # fmt: skip
    cpus: float = Field(default=0, ge=0, le=100_000, description="cores it holds while it runs")
    preemptible: bool = Field(
        default=False, description="a job of higher priority that fits nowhere may stop it"
        " (SIGTERM, then SIGKILL after its worker's kill grace): it is queued again, no retry used",
    )  # fmt: skip
    nodes: int = Field(
        default=1, ge=1, le=64, description="workers it runs on at once, each a rank of a gang"
        " (torch.distributed's RANK, WORLD_SIZE, MASTER_ADDR…): all or none",
    )  # fmt: skip
    memory_gb: float = Field(
        default=0, ge=0, le=1_000_000, description="memory it holds while it runs"
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first")
    max_retries: int = Field(
        default=3, ge=0, le=100, description="retries of lost or timed-out attempts"
    )
    timeout_s: float | None = Field(default=None, gt=0, le=30 * 86400)
    workdir: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="the SHA-256 of a packed working"
        " directory uploaded with PUT /api/blobs/{digest} (a .tar.gz): each attempt runs in it",
    )  # fmt: skip
    outputs: list[Annotated[str, Field(min_length=1, max_length=300)]] | None = Field(
        default=None, min_length=1, max_length=32, description="globs of files in its"
        " directory (model/*.safetensors) stored as its artifacts once it has succeeded",
    )  # fmt: skip
    params: dict[Annotated[str, Field(max_length=200)], Any] | None = Field(
        default=None, description="the job's parameters (a train job's config): a JSON object"
        f" of at most {MAX_PARAMS_BYTES // 1024} KiB, read with corral.sdk.context().params",
    )  # fmt: skip
    requirements: list[Requirement] | None = Field(
        default=None, min_length=1, max_length=500, description="lines of a requirements file:"
        " the worker runs the job in a Python environment with them installed, built once per"
        " worker for the same lines and interpreter",
    )  # fmt: skip

    _kind_fits = field_validator("command", "call")(_call_or_command)

    @field_validator("nodes")
    @classmethod
    def _a_gang_runs_commands(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("kind") == CALL_KIND:
            raise ValueError('a job of kind "call" runs in one interpreter: nodes must be 1')
        if value > 1 and info.data.get("preemptible"):
            raise ValueError("a gang is not preempted: nodes must be 1 for a preemptible job")
        return value

    @field_validator("params")
    @classmethod
    def _params_are_json(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            size = len(json.dumps(value, allow_nan=False, separators=(",", ":")).encode())
        except (TypeError, ValueError) as exc:
            raise ValueError(f"must be JSON: {exc}") from None
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"{size} bytes of JSON: at most {MAX_PARAMS_BYTES}")
        return value

    @field_validator("workdir", "requirements", "outputs")
    @classmethod
    def _a_call_has_no_directory(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("kind") == CALL_KIND:
            raise ValueError('a job of kind "call" runs in a warm interpreter that many share:'
                             f" {info.field_name} is for the other kinds")  # fmt: skip
        return value

    @field_validator("gpu_memory_gb", "gpu_name")
    @classmethod
    def _of_its_gpus(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not info.data.get("gpus"):
            raise ValueError("says what its GPUs must be: ask for gpus too")
        return value


class AttemptView(BaseModel):
    number: int
    worker_id: str | None
    outcome: str | None = Field(
        description="succeeded, failed, timed_out, lost, cancelled, preempted"
    )
    assigned_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    error: str | None
    gpu_ids: list[int] = Field(default=[], description="the GPUs it held")


class JobView(BaseModel):
    id: str
    name: str
    state: JobState
    kind: str
    command: list[str] = Field(description='empty for a job of kind "call"')
    call: CallSpec | None = None
    worker_labels: dict[str, str]
    tags: list[str] = []
    gpus: int
    gpu_memory_gb: float | None = None
    gpu_name: str | None = None
    accelerator: str | None = None
    target: str = "auto"
    cpus: float = 0
    memory_gb: float = 0
    nodes: int = 1
    preemptible: bool = False
    preemptions: int = Field(default=0, description="times it was stopped for a higher priority")
    gang_id: str | None = Field(default=None, description="rank 0's id: the gang's")
    rank: int | None = None
    members: list[str] | None = Field(
        default=None, description="a gang's jobs by rank (only when reading one of them)"
    )
    priority: int
    max_retries: int
    timeout_s: float | None
    workdir: str | None = Field(default=None, description="its packed working directory's SHA-256")
    requirements: list[str] | None = Field(default=None, description="its environment's packages")
    params: dict[str, Any] | None = Field(default=None, description="its parameters")
    outputs: list[str] | None = Field(default=None, description="what it stores on success")
    attempt: int = Field(description="current attempt number; 0 before the first")
    worker_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    error: str | None
    result: dict[str, Any] | None = Field(
        description="what the job set with corral.sdk.set_result; a call job's return "
        'value as {"value": …}'
    )
    attempts: list[AttemptView] | None = Field(
        default=None, description="every attempt so far (only when reading one job)"
    )
    final_metrics: dict[str, float | None] | None = Field(
        default=None, description="each metric's last reported value (a list with"
        " final_metrics=true)",
    )  # fmt: skip


class ArtifactView(BaseModel):
    id: int
    job_id: str
    attempt: int
    kind: Literal["checkpoint", "output"]
    name: str
    step: int | None = Field(default=None, description="a checkpoint's training step")
    digest: str = Field(description="SHA-256 of its bytes")
    size: int
    created_at: datetime


class ArtifactList(BaseModel):
    artifacts: list[ArtifactView] = Field(description="newest first")


class MetricPoint(BaseModel):
    step: int | None
    value: float | None = Field(description="null: the job reported NaN or an infinity")
    attempt: int
    at: datetime = Field(description="when the coordinator stored it")


class MetricSeries(BaseModel):
    name: str
    points: list[MetricPoint] = Field(description="in the order they were reported")


class JobMetrics(BaseModel):
    """GET /api/jobs/{id}/metrics: what its code reported with corral.sdk.report."""

    job_id: str
    series: list[MetricSeries]
    next_cursor: str | None = Field(default=None, description="more points after these")


class BlobStored(BaseModel):
    digest: str
    size: int
    created: bool = Field(description="false: the tenant had it already")


class WorkerVerdict(BaseModel):
    worker_id: str
    name: str
    verdict: str = Field(description='"fits now", "busy", "draining", "cannot: …"')


class JobWhy(BaseModel):
    """GET /api/jobs/{id}/why: why a queued job is not running, in words to act on."""

    job_id: str
    state: JobState
    reasons: list[str] = Field(description="most useful first")
    workers: list[WorkerVerdict] = Field(default=[], description="each worker of the tenant")


class JobList(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = None


class EventView(BaseModel):
    """One entry of a job's or a worker's history: a change of state and its cause."""

    id: int = Field(description="increasing; resume a follow with Last-Event-ID")
    at: datetime
    kind: str = Field(description="job.submitted, job.assigned, worker.offline, …")
    job_id: str | None = None
    worker_id: str | None = None
    attempt: int | None = None
    from_state: str | None = None
    to_state: str | None = None
    reason: str | None = Field(
        default=None, description="stable code of why: heartbeat_timeout, stream_dropped, …"
    )
    message: str | None = Field(default=None, description="why, in words")
    cause: str = Field(description="the request (req_…), reaper tick (tick_…) or dispatch "
                       "round (round_…) that made the change; the coordinator's log lines "
                       "carry the same id")  # fmt: skip
    actor: str | None = Field(
        default=None, description="who: an API key id, a worker id, reaper, dispatcher"
    )
    source: str | None = Field(default=None, description="the address the request came from")
    tenant_id: str | None = Field(default=None, description="whose it is ('' : nobody's known)")
    detail: dict[str, Any] = Field(
        default={}, description="backoff_s, exit_code, outcome, address, capabilities, …"
    )


class EventList(BaseModel):
    events: list[EventView] = Field(description="oldest first")
    next_cursor: str | None = Field(default=None, description="pass as ?cursor= for more")


class WorkerCreate(_Wire):
    name: Name
    worker_type: WorkerType = WorkerType.EPHEMERAL
    labels: Labels = Field(default={}, description="authoritative: its register cannot change them")
    allow_labels: list[LabelKey] = Field(
        default=[], max_length=MAX_LABELS,
        description="label keys (globs: 'zone', 'rack-*', '*') the worker may set itself",
    )  # fmt: skip
    local: bool = Field(
        default=False, description="a coordinator's own worker: target 'local' runs only there"
    )
    shared: bool = Field(
        default=False, description="(operator) it serves every tenant: the shared pool, fair"
        " share between tenants by what each runs",
    )  # fmt: skip


class WorkerCreated(BaseModel):
    id: str
    worker_id: str
    name: str
    token: str = Field(description="shown only once")


class WorkerView(BaseModel):
    id: str
    name: str
    status: WorkerStatus
    worker_type: WorkerType
    labels: dict[str, str]
    allowed_labels: list[str] = []
    hostname: str | None
    cpu_count: int | None
    cpu_model: str | None = None
    memory_bytes: int | None
    memory_buffer: float = 0
    accelerator: str = "cpu"
    gpu_count: int
    gpus: list[GpuInfo]
    gpus_in_use: list[int] = Field(default=[], description="indices its attempts hold")
    slots: int
    running: int
    paused: bool = Field(default=False, description="takes no new work until resumed")
    local: bool = Field(default=False, description="a coordinator's own worker")
    shared: bool = Field(default=False, description="serves every tenant")
    last_heartbeat: datetime | None
    created_at: datetime
    constrained: str | None = Field(default=None, description="why it takes no new work")
    cert_expires_at: datetime | None = Field(
        default=None, description="when its certificate ends, if it enrolled with one"
    )


class WorkerList(BaseModel):
    workers: list[WorkerView]


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """application/problem+json (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str
    errors: list[ProblemField] = []


MAX_REPORTS = 500


class WorkerReport(AttemptReport):
    """One report of several (``POST /api/workers/reports``): as ``AttemptReport``, for
    the job it names."""

    job_id: str = Field(min_length=1, max_length=100)


class ReportBatch(_Wire):
    """POST /api/workers/reports: a worker's reports, taken in one transaction, each on its
    own: one refused does not refuse the others."""

    reports: list[WorkerReport] = Field(min_length=1, max_length=MAX_REPORTS)


class ReportOutcome(_Wire):
    job_id: str
    attempt: int
    state: JobState | None = Field(default=None, description="taken: the job's state now")
    error: Problem | None = Field(
        default=None, description="refused: what the single report's answer would have said"
    )


class ReportBatchAck(_Wire):
    results: list[ReportOutcome] = Field(description="one per report, in their order")
