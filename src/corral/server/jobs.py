"""Job service: submit, cancel, attempt reports and logs. Each reads what its decision
(``corral.model.decide``) needs and applies the answer in the same transaction."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError

from corral.model import (
    ACTIVE_JOB_STATES,
    TERMINAL_JOB_STATES,
    AttemptOutcome,
    Conflict,
    CorralError,
    IdempotencyKeyReused,
    IllegalTransition,
    InvalidInput,
    JobState,
    NotFound,
    StaleAttempt,
    decide,
)
from corral.model.changes import Change, MoveJob
from corral.model.snapshot import AttemptSnap, JobSnap, Row, WorkerLoad, WorkerSnap
from corral.protocol import (
    AttemptReport,
    AttemptView,
    JobList,
    JobMetrics,
    JobSubmit,
    JobView,
    JobWhy,
    LogBatch,
    Problem,
    ReportOutcome,
    WorkerReport,
    WorkerVerdict,
)
from corral.scheduler import Candidate, explain
from corral.server import metrics
from corral.server.auth import Identity, WorkerIdentity, new_id
from corral.server.core import Core, Tx
from corral.server.dispatch import demand
from corral.store import as_utc, streams
from corral.store import jobs as jobs_q
from corral.store import keys as keys_q
from corral.store import metrics as metrics_q
from corral.store import workers as workers_q


def view(row: Row) -> JobView:
    return JobView(
        id=row["id"],
        name=row["name"],
        state=JobState(row["state"]),
        kind=row["kind"],
        command=row["command"],
        call=row["call"],
        worker_labels=row["worker_labels"],
        gpus=row["gpus"],
        cpus=row["cpus"] or 0,
        memory_gb=row["memory_gb"] or 0,
        nodes=row["nodes"],
        preemptible=row["preemptible"],
        preemptions=row["preemptions"],
        gang_id=row["gang_id"],
        rank=row["rank"],
        **(row["requires"] or {}),
        priority=row["priority"],
        max_retries=row["max_retries"],
        timeout_s=row["timeout_s"],
        workdir=row["workdir"],
        requirements=row["requirements"],
        params=row["params"],
        outputs=row["outputs"],
        attempt=row["attempt"],
        worker_id=row["worker_id"],
        created_at=as_utc(row["created_at"]),
        started_at=as_utc(row["started_at"]),
        finished_at=as_utc(row["finished_at"]),
        exit_code=row["exit_code"],
        error=row["error"],
        result=row["result"],
    )


async def _get(t: Tx, tenant_id: str, job_id: str, *, lock: bool = False) -> RowMapping:
    row = await jobs_q.get(t.conn, tenant_id, job_id, for_update=lock)
    if row is None:
        raise NotFound(f"no job {job_id}")
    return row


def request_hash(body: JobSubmit) -> str:
    """The submitted request, canonical (defaults filled in), as SHA-256."""
    # Without "call" for a command job, and without a batch item's own key: the same
    # request hashes the same through either route, and as it did before call jobs existed.
    leave_out = {"idempotency_key"} | ({"call"} if body.call is None else set())
    # Requirements added since, when not asked for: a request hashes as it did before them.
    leave_out |= {f for f in _ADDED if getattr(body, f) == JobSubmit.model_fields[f].default}
    fields = body.model_dump(mode="json", exclude=leave_out)
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(old: RowMapping, digest: str) -> tuple[JobView, bool]:
    # As Stripe's API does: a key names one request; another request under it is a mistake.
    if old["request_hash"] not in (None, digest):
        raise IdempotencyKeyReused(
            f"Idempotency-Key was used for job {old['id']} with a different request",
            field="Idempotency-Key",
        )
    return view(old), False


def _default_name(body: JobSubmit) -> str:
    if body.command:
        return os.path.basename(body.command[0])[:200] or "job"
    if body.call is not None and body.call.target:
        return body.call.target.rpartition(":")[2][:200] or "call"
    return "call"


def stored(
    body: JobSubmit, job_id: str, tenant_id: str, key: str | None, digest: str, now: datetime
) -> dict[str, Any]:
    """Every stored field of a new job, from its request."""
    return {
        "id": job_id, "tenant_id": tenant_id, "name": body.name or _default_name(body),
        "kind": body.kind, "command": body.command or [],
        "call": body.call.model_dump(mode="json") if body.call is not None else None,
        "env": body.env, "worker_labels": body.worker_labels, "gpus": body.gpus,
        "cpus": body.cpus, "memory_gb": body.memory_gb, "requires": requires(body),
        "nodes": body.nodes, "preemptible": body.preemptible,
        "priority": body.priority, "max_retries": body.max_retries,
        "timeout_s": body.timeout_s, "workdir": body.workdir,
        "requirements": body.requirements, "params": body.params, "outputs": body.outputs,
        "idempotency_key": key,
        "request_hash": digest,
        "created_at": now,
    }  # fmt: skip


# What a job may ask of its worker beyond labels and a count of GPUs; those not counted
# are stored together (``requires``).
REQUIREMENTS = ("tags", "gpu_memory_gb", "gpu_name", "accelerator", "target", "cpus", "memory_gb")
# Fields added since requests were first hashed: left out of the hash at their defaults.
_ADDED = (*REQUIREMENTS, "nodes", "preemptible", "workdir", "requirements", "params",
          "outputs")  # fmt: skip


def requires(body: JobSubmit) -> dict[str, Any] | None:
    """The requirements that are not counted, as stored; None for none."""
    more = {"tags": list(dict.fromkeys(body.tags)), "gpu_memory_gb": body.gpu_memory_gb,
            "gpu_name": body.gpu_name, "accelerator": body.accelerator,
            "target": body.target if body.target != "auto" else None}  # fmt: skip
    return {k: v for k, v in more.items() if v} or None


def members(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a submitted job is stored as: itself, or its gang's members, one a rank;
    rank 0 keeps the job's id (the gang's, which its members name) and idempotency key."""
    nodes, gang = values["nodes"], values["id"]
    if nodes == 1:
        return [{**values, "gang_id": None, "rank": None}]
    return [{**values, "id": gang if rank == 0 else f"{gang}.{rank}", "gang_id": gang,
             "rank": rank, "idempotency_key": values["idempotency_key"] if rank == 0 else None}
            for rank in range(nodes)]  # fmt: skip


_UNSET = dict.fromkeys(
    ("gpu_ids", "worker_id", "started_at", "finished_at", "exit_code", "error", "result")
)


async def submit(
    core: Core, who: Identity, body: JobSubmit, idempotency_key: str | None
) -> tuple[JobView, bool]:
    """Queue a job. With an Idempotency-Key, a repeat returns the first job (created=False)."""
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 200):
        raise InvalidInput("Idempotency-Key must be 1-200 characters", field="Idempotency-Key")
    digest = request_hash(body)
    job_id = new_id("job")
    await have_workdirs(core, who.tenant_id, [body])
    try:
        async with core.tx(who.key_id) as t:
            if idempotency_key:
                old = await jobs_q.by_idempotency_key(t.conn, who.tenant_id, idempotency_key)
                if old is not None:
                    return _replay(old, digest)
            rows = members(stored(body, job_id, who.tenant_id, idempotency_key, digest, t.now))
            await t.apply([c for v in rows for c in decide.submit(v, actor=who.key_id)])
            values = rows[0]
            # As stored, without reading it back: a new job has nothing else set yet.
            return view(
                {**_UNSET, **values, "state": JobState.QUEUED, "attempt": 0, "preemptions": 0}
            ), True
    except IntegrityError:
        if not idempotency_key:
            raise
        # Two submits with one key raced; the other one won.
        async with core.tx() as t:
            old = await jobs_q.by_idempotency_key(t.conn, who.tenant_id, idempotency_key)
        if old is None:
            raise
        return _replay(old, digest)


async def have_workdirs(core: Core, tenant_id: str, bodies: Sequence[JobSubmit]) -> None:
    """A job's packed working directory must be uploaded first, by its tenant."""
    assert core.blobs is not None
    for digest in dict.fromkeys(b.workdir for b in bodies if b.workdir):
        if not await core.blobs.exists(tenant_id, digest):
            raise InvalidInput(f"no uploaded blob {digest}: PUT /api/blobs/{digest} first"
                               " (corral submit --workdir does)", field="workdir")  # fmt: skip


async def why(core: Core, tenant_id: str, job_id: str) -> JobWhy:
    """Why it is not running: for a queued job, what each worker of its tenant lacks or
    is doing (``scheduler.explain``); for another, where it is."""
    connected = core.hub.connected()
    async with core.tx() as t:
        row = await _get(t, tenant_id, job_id)
        state = JobState(row["state"])
        if state is not JobState.QUEUED:
            return JobWhy(job_id=job_id, state=state, reasons=[_not_queued(state, row)])
        workers = [*await workers_q.all_of(t.conn, tenant_id), *await workers_q.shared(t.conn)]
        workers = list({w["id"]: w for w in workers}.values())
        load = await jobs_q.load_by_worker(t.conn, [w["id"] for w in workers])
        ahead = await jobs_q.queued_ahead(t.conn, row)
        quota = await _quota(t, row)
    found = [Candidate(w["name"], WorkerSnap.of(w), load.get(w["id"], WorkerLoad()),
                       w["id"] in connected) for w in workers]  # fmt: skip
    reasons, verdicts = explain(demand(row), found, now=core.clock.now(), ahead=ahead,
                                not_before=as_utc(row["not_before"]), quota=quota)  # fmt: skip
    return JobWhy(job_id=job_id, state=state, reasons=reasons,
                  workers=[WorkerVerdict(worker_id=v.worker_id, name=v.name, verdict=v.verdict)
                           for v in verdicts])  # fmt: skip


async def _quota(t: Tx, job: RowMapping) -> str | None:
    """The tenant's cap that the job would pass if it started now, in words."""
    tenant = await keys_q.tenant(t.conn, job["tenant_id"])
    if tenant is None or (tenant["max_running_jobs"] is None and tenant["max_gpus"] is None):
        return None
    used = (await jobs_q.usage_by_tenant(t.conn, [job["tenant_id"]])).get(job["tenant_id"])
    jobs, gpus = used or (0, 0)
    if (cap := tenant["max_running_jobs"]) is not None and jobs >= cap:
        return f"tenant quota of {cap} running jobs reached ({jobs} running)"
    if (cap := tenant["max_gpus"]) is not None and gpus + job["gpus"] > cap:
        return f"tenant quota of {cap} GPUs in use ({gpus} held, it needs {job['gpus']})"
    return None


def _not_queued(state: JobState, row: RowMapping) -> str:
    if state in ACTIVE_JOB_STATES:
        return f"it is {state.value} on worker {row['worker_id']}"
    return f"it has ended: {state.value}"


async def get(core: Core, tenant_id: str, job_id: str, *, attempts: bool = False) -> JobView:
    async with core.tx() as t:
        job = view(await _get(t, tenant_id, job_id))
        if attempts:
            rows = await jobs_q.attempts_of(t.conn, job_id)
            job.attempts = [AttemptView(
                number=a["number"], worker_id=a["worker_id"], outcome=a["outcome"],
                assigned_at=as_utc(a["assigned_at"]), started_at=as_utc(a["started_at"]),
                finished_at=as_utc(a["finished_at"]), exit_code=a["exit_code"], error=a["error"],
                gpu_ids=a["gpu_ids"] or [],
            ) for a in rows]  # fmt: skip
            if job.gang_id is not None:
                job.members = await jobs_q.members_of(t.conn, tenant_id, job.gang_id)
        return job


def _cursor(row: JobView) -> str:
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, jid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        if "\x00" in jid:
            raise ValueError("NUL in the id")
        return datetime.fromisoformat(at), jid
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not one this server gave out", field="cursor") from exc


def label_filter(pairs: list[str]) -> dict[str, str]:
    """``key=value`` filters of a listing, checked."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not 0 < len(key) <= 100 or len(value) > 200:
            raise InvalidInput(f"label filter {pair[:120]!r} is not key=value", field="label")
        out[key] = value
    return out


async def page(
    core: Core, tenant_id: str, *, states: list[str], worker_id: str | None, limit: int,
    cursor: str | None, final_metrics: bool = False, name: str | None = None,
    labels: dict[str, str] | None = None,
) -> JobList:  # fmt: skip
    for s in states:
        if s not in JobState.__members__.values():
            raise InvalidInput(f"unknown state {s!r}", field="state")
    before = _parse_cursor(cursor) if cursor else None
    async with core.tx() as t:
        rows = await jobs_q.page(t.conn, tenant_id, states=states, worker_id=worker_id,
                                 limit=limit, before=before, name=name,
                                 labels=labels)  # fmt: skip
        last = await metrics_q.last_of(t.conn, tenant_id, [r["id"] for r in rows]) if (
            final_metrics) else {}  # fmt: skip
    items = [view(r) for r in rows]
    if final_metrics:
        items = [j.model_copy(update={"final_metrics": last.get(j.id, {})}) for j in items]
    return JobList(jobs=items, next_cursor=_cursor(items[-1]) if len(items) == limit else None)


def request_of(row: RowMapping) -> JobSubmit:
    """The request a stored job was made from (what a retry submits again)."""
    fields = {k: row[k] for k in ("name", "kind", "env", "worker_labels", "gpus", "cpus",
              "memory_gb", "nodes", "preemptible", "priority", "max_retries", "timeout_s",
              "workdir", "requirements", "params", "outputs", "call")}  # fmt: skip
    return JobSubmit.model_validate(
        {**fields, **(row["requires"] or {}), "command": row["command"] or None}
    )


async def retry(core: Core, who: Identity, job_id: str) -> JobView:
    """Submit an ended job's request again, as a new job (an ended job stays ended: its
    result, if any, was accepted once)."""
    async with core.tx() as t:
        row = await _get(t, who.tenant_id, job_id)
        if row["gang_id"] is not None and row["gang_id"] != row["id"]:
            row = await _get(t, who.tenant_id, row["gang_id"])  # the gang, through rank 0
    if JobState(row["state"]) not in TERMINAL_JOB_STATES:
        raise Conflict(f"job {row['id']} is {row['state']}: only an ended job is retried")
    body = request_of(row)
    await have_workdirs(core, who.tenant_id, [body])
    new_id_ = new_id("job")
    async with core.tx(who.key_id) as t:
        rows = members(stored(body, new_id_, who.tenant_id, None, request_hash(body), t.now))
        await t.apply([c for v in rows for c in decide.submit(v, actor=who.key_id,
                                                             retry_of=row["id"])])  # fmt: skip
        values = rows[0]
        return view({**_UNSET, **values, "state": JobState.QUEUED, "attempt": 0,
                     "preemptions": 0})  # fmt: skip


async def cancel(core: Core, who: Identity, job_id: str) -> JobView:
    """Cancel a job; a gang's member cancels its whole gang, every member at once (one by
    one, a member failing for want of its peer would have its gang run again)."""
    async with core.tx() as t:
        gang = (await _get(t, who.tenant_id, job_id))["gang_id"]
        members = await jobs_q.members_of(t.conn, who.tenant_id, gang) if gang else [job_id]
    shown: JobView | None = None
    for member in members:
        try:
            done = await _cancel(core, who, member)
        except IllegalTransition:
            if gang is None:
                raise
            continue  # a member that has ended stays as it ended
        shown = done if member == job_id else shown
    if shown is None:  # the job asked for had ended (the rest of its gang is cancelled)
        raise IllegalTransition(f"job {job_id} already ended")
    return shown


async def _cancel(core: Core, who: Identity, job_id: str) -> JobView:
    for _ in range(5):  # a guarded move can lose a race; read again and retry
        async with core.tx(who.key_id) as t:
            # Worker before job, as everywhere: lock the worker it runs on (if any), then
            # the job; if it moved to another worker meanwhile, start again.
            worker_id = (await _get(t, who.tenant_id, job_id))["worker_id"]
            if worker_id:
                await workers_q.lock(t.conn, worker_id)
            row = await _get(t, who.tenant_id, job_id, lock=True)
            if row["worker_id"] not in (worker_id, None):
                continue
            if not await t.apply(decide.cancel(JobSnap.of(row), actor=who.key_id, now=t.now)):
                return view(await _get(t, who.tenant_id, job_id))
    raise IllegalTransition(f"job {job_id} keeps changing; try again")


def _attempt_of(
    row: RowMapping | None, w: WorkerIdentity, job_id: str, attempt: int
) -> tuple[JobSnap, AttemptSnap]:
    """The job and the attempt, if ``attempt`` is one this worker was given; else the report
    is stale."""
    if row is None:
        raise NotFound(f"no job {job_id}")
    if (
        row["number"] is None
        or row["att_worker_id"] != w.worker_id
        or (row["outcome"] == AttemptOutcome.LOST)
    ):
        raise StaleAttempt(f"attempt {attempt} of {job_id} is not current on this worker")
    att = AttemptSnap(job_id, attempt, row["att_worker_id"], row["outcome"],
                      as_utc(row["assigned_at"]), row["reported_ns"])  # fmt: skip
    return JobSnap.of(row), att


LATE_LOGS_S = 600.0  # an ended attempt's output is taken for this long after its end


async def report(core: Core, w: WorkerIdentity, job_id: str, r: AttemptReport) -> JobState:
    async with core.tx(w.worker_id) as t:
        await core.credentials.verify(t.conn, w, lock=True, row=False)
        (state,) = await _reports(t, w, [(job_id, r)])
    if isinstance(state, CorralError):
        raise state
    return state


async def report_many(
    core: Core, w: WorkerIdentity, reports: list[WorkerReport]
) -> list[ReportOutcome]:
    """Several reports in one transaction, each taken or refused on its own: a refused one
    writes nothing (it is refused before its changes, or its one guarded move missed)."""
    async with core.tx(w.worker_id) as t:
        await core.credentials.verify(t.conn, w, lock=True, row=False)
        states = await _reports(t, w, [(r.job_id, r) for r in reports])
    out: list[ReportOutcome] = []
    for r, state in zip(reports, states, strict=True):
        if isinstance(state, CorralError):
            problem = Problem(title=state.code.replace("_", " "), status=state.status,
                              detail=str(state), code=state.code)  # fmt: skip
            out.append(ReportOutcome(job_id=r.job_id, attempt=r.attempt, error=problem))
        else:
            out.append(ReportOutcome(job_id=r.job_id, attempt=r.attempt, state=state))
    return out


def _distinct_runs(items: list[tuple[str, AttemptReport]]) -> list[list[int]]:
    """The items' indices in order, cut wherever a job comes again: a run's reports are
    read and decided together, so a job's second report must see its first applied."""
    runs: list[list[int]] = [[]]
    seen: set[str] = set()
    for i, (job_id, _) in enumerate(items):
        if job_id in seen:
            runs.append([])
            seen.clear()
        runs[-1].append(i)
        seen.add(job_id)
    return runs


async def _reports(
    t: Tx, w: WorkerIdentity, items: list[tuple[str, AttemptReport]]
) -> list[JobState | CorralError]:
    """Reports of one worker, already verified and locked: each run's jobs are read (and
    locked) in one statement, decided one by one, and their changes written together.
    Locked: a cancel or a reap committing meanwhile would otherwise make the guarded move
    miss, and the worker would drop a result it was right to report."""
    out: dict[int, JobState | CorralError] = {}
    for run in _distinct_runs(items):
        wanted = {items[i][0]: items[i][1].attempt for i in run}
        # A shared worker's jobs are any tenant's: the attempt, its own, is the check.
        tenant = None if w.shared else w.tenant_id
        rows = await jobs_q.reported(t.conn, tenant, wanted, for_update=True)
        decided: list[tuple[int, list[Change]]] = []
        for i in run:
            job_id, r = items[i]
            try:
                job, att = _attempt_of(rows.get(job_id), w, job_id, r.attempt)
                await t.at("report.read", job_id=job_id)
                changes, out[i] = decide.report(
                    job, att, w.worker_id,
                    status=str(r.status), now=t.now, policy=t.policy, exit_code=r.exit_code,
                    error=r.error, result=r.result, sent_ns=r.sent_ns,
                )  # fmt: skip
            except CorralError as exc:
                out[i] = exc
            else:
                decided.append((i, changes))
        missed = await t.apply([c for _, changes in decided for c in changes])
        lost = {m.job_id for m in missed if isinstance(m, MoveJob)}
        for i, _ in decided:
            job_id, r = items[i]
            if job_id in lost:
                out[i] = StaleAttempt(f"attempt {r.attempt} of {job_id} ended meanwhile")
    return [out[i] for i in range(len(items))]


async def append_logs(core: Core, w: WorkerIdentity, job_id: str, batch: LogBatch) -> None:
    """A batch of an attempt's output; once the attempt has ended, only for
    ``LATE_LOGS_S`` (what a worker ships after its final report, the coordinator having been
    away): a job's log is closed after that, and a batch is refused (409)."""
    async with core.tx() as t:
        await core.credentials.verify(t.conn, w, row=False)
        tenant = None if w.shared else w.tenant_id
        rows = await jobs_q.reported(t.conn, tenant, {job_id: batch.attempt})
        _attempt_of(rows.get(job_id), w, job_id, batch.attempt)
        ended = as_utc(rows[job_id]["att_finished_at"])
        if ended is not None and (t.now - ended).total_seconds() > LATE_LOGS_S:
            raise StaleAttempt(f"attempt {batch.attempt} of {job_id} ended at"
                               f" {ended:%H:%M:%S}: its output is closed")  # fmt: skip
        tenant_id = rows[job_id]["tenant_id"]
        if await streams.append_log(t.conn, job_id=job_id, attempt=batch.attempt, seq=batch.seq,
                                    tenant_id=tenant_id, data=batch.data,
                                    max_bytes=core.settings.job_log_max_bytes):  # fmt: skip
            await metrics.store(t.conn, job_id=job_id, tenant_id=tenant_id, attempt=batch.attempt,
                                text=batch.data, now=t.now,
                                cap=core.settings.metric_points_max)  # fmt: skip
        t.jobs.add(job_id)


@dataclass(frozen=True)
class LogPage:
    chunks: list[RowMapping]
    state: JobState
    cut_after: int | None  # the chunk after which output was cut (0: before the first)
    cut_bytes: int

    def cut_marker(self, max_bytes: int) -> str:
        keep = max_bytes // 2 // (1024 * 1024)
        return (f"\n[corral: {self.cut_bytes} bytes of output were cut here; a job's log keeps"
                f" its first and its last {keep} MiB]\n")  # fmt: skip


METRICS_PAGE = 10_000


async def job_metrics(
    core: Core, tenant_id: str, job_id: str, *, names: Sequence[str], cursor: str | None
) -> JobMetrics:
    """Its reported metrics, a page of points at a time, as series by name."""
    if cursor is not None and not cursor.isdigit():
        raise InvalidInput("cursor is not one this server gave out", field="cursor")
    async with core.tx() as t:
        await _get(t, tenant_id, job_id)
        rows = await metrics_q.series(t.conn, tenant_id, job_id, names=names,
                                      after_id=int(cursor or 0), limit=METRICS_PAGE)  # fmt: skip
    return metrics.page(job_id, list(rows), METRICS_PAGE)


async def logs_after(core: Core, tenant_id: str, job_id: str, after_id: int) -> LogPage:
    async with core.tx() as t:
        row = await _get(t, tenant_id, job_id)
        chunks = await streams.logs_after(t.conn, tenant_id, job_id, after_id)
    return LogPage(list(chunks), JobState(row["state"]), row["log_cut_after"], row["log_cut_bytes"])
