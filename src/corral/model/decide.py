"""Decisions: each stimulus, given what was read, returns what must change (no I/O).

The coordinator's shells read a snapshot (``corral.model.snapshot``), call one of these and
hand the result to ``apply``; nothing else decides a job's or a worker's state.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from corral.model.changes import (
    Assign,
    Cancel,
    Change,
    ClearOutbox,
    DeleteWorker,
    Drain,
    EndStream,
    ForgetDrop,
    InsertJob,
    InsertWorker,
    MoveJob,
    MoveWorker,
    Notify,
    Record,
    StartAttempt,
    UpdateAttempt,
    UpdateWorker,
    Why,
)
from corral.model.errors import IllegalTransition, NotRegistered, StaleAttempt, StaleRegistration
from corral.model.history import Kind, Reason
from corral.model.job import (
    ACTIVE_JOB_STATES,
    STOPPING_JOB_STATES,
    TERMINAL_JOB_STATES,
    AttemptOutcome,
    JobState,
    next_after_attempt,
    retry_delay,
)
from corral.model.snapshot import AttemptSnap, JobSnap, Policy, WorkerSnap
from corral.model.worker import WorkerStatus, WorkerType

Ref = tuple[str, int]  # (job id, attempt number)
_MESSAGE_CAP = 500


def _message(error: str | None) -> str | None:
    """The first line of an error, short enough for a timeline."""
    if not error:
        return None
    first = error.strip().splitlines()[0] if error.strip() else error
    return first[:_MESSAGE_CAP]


# ---- jobs -------------------------------------------------------------------------------


def submit(
    values: Mapping[str, Any], *, actor: str | None, retry_of: str | None = None
) -> list[Change]:
    """A new job, queued. ``values`` holds every stored field of it; ``retry_of``: the ended
    job whose request it repeats."""
    why = (Why(actor=actor, message=f"a retry of {retry_of}", detail={"retry_of": retry_of})
           if retry_of else Why(actor=actor))  # fmt: skip
    return [InsertJob(values={**values, "state": JobState.QUEUED.value, "attempt": 0},
                      why=why)]  # fmt: skip


def assign(
    job: JobSnap, worker_id: str, now: datetime, gpu_ids: Sequence[int] = (),
    rendezvous: Mapping[str, Any] | None = None,
) -> MoveJob:  # fmt: skip
    """Hand a queued job to a worker as its next attempt, holding ``gpu_ids`` there; a gang
    member with where its gang meets."""
    number = job.attempt + 1
    ids = list(gpu_ids)
    detail: dict[str, Any] = {"gpus": ids} if ids else {}
    if rendezvous:
        detail["rendezvous"] = dict(rendezvous)
    return MoveJob(
        job.id, job.tenant_id, JobState.QUEUED, JobState.ASSIGNED, job.attempt, worker_id,
        fields={"attempt": number, "worker_id": worker_id, "not_before": None,
                "gpu_ids": ids or None, "rendezvous": dict(rendezvous) if rendezvous else None},
        why=Why(detail=detail),
        then=(StartAttempt(job.id, job.tenant_id, number, worker_id, now, ids or None),
              Notify(worker_id, job.tenant_id, Assign(job.id, number, job.row, ids,
                                                      rendezvous))),
    )  # fmt: skip


def end_attempt(
    job: JobSnap, outcome: AttemptOutcome, *, now: datetime, policy: Policy,
    exit_code: int | None = None, error: str | None = None,
    result: Mapping[str, Any] | None = None, reason: Reason | None = None,
    reported_ns: int | None = None,
) -> MoveJob:  # fmt: skip
    """End the job's current attempt: requeue it with backoff, or finish it."""
    preempted = job.state is JobState.PREEMPTING and outcome is not AttemptOutcome.SUCCEEDED
    if preempted:
        outcome = AttemptOutcome.PREEMPTED  # however it stopped: it was told to
    nxt = next_after_attempt(job.state, outcome, job.attempt - job.preemptions, job.max_retries,
                             gang=job.gang_id is not None)  # fmt: skip
    detail: dict[str, Any] = {"outcome": outcome.value}
    if exit_code is not None:
        detail["exit_code"] = exit_code
    if job.started_at is not None and job.state is not JobState.ASSIGNED:
        detail["ran_s"] = _seconds(now - job.started_at)  # the attempt's run (metrics)
    fields: dict[str, Any]
    if preempted:  # at once, and the attempt is not one of its retries
        fields = {"worker_id": None, "gpu_ids": None, "rendezvous": None, "error": error,
                  "started_at": None, "not_before": None,
                  "preemptions": job.preemptions + 1}  # fmt: skip
    elif nxt is JobState.QUEUED:
        tries = job.attempt - job.preemptions
        delay = retry_delay(tries, policy.retry_backoff_base_s, policy.retry_backoff_cap_s)
        detail["backoff_s"] = delay
        fields = {
            "worker_id": None,
            "gpu_ids": None,
            "rendezvous": None,
            "started_at": None,  # the start of its current attempt: it has none now
            "error": error,
            "not_before": now + timedelta(seconds=delay),
        }
    else:
        fields = {"finished_at": now, "exit_code": exit_code, "error": error,
                  "result": dict(result) if result is not None and nxt is JobState.SUCCEEDED
                  else None}  # fmt: skip
    ended = UpdateAttempt(job.id, job.attempt, {
        "outcome": outcome.value, "finished_at": now, "exit_code": exit_code, "error": error,
        **({"reported_ns": reported_ns} if reported_ns is not None else {}),
    })  # fmt: skip
    return MoveJob(
        job.id, job.tenant_id, job.state, nxt, job.attempt, job.worker_id, fields,
        why=Why(reason=reason, message=_message(error), detail=detail), then=(ended,),
        gang_id=job.gang_id,
    )  # fmt: skip


def lose(
    jobs: Iterable[JobSnap], reason: Reason, message: str, *, now: datetime, policy: Policy
) -> list[Change]:
    """Their attempts are lost (the worker died, went silent, came back without them)."""
    return [end_attempt(j, AttemptOutcome.LOST, now=now, policy=policy, error=message,
                        reason=reason) for j in jobs]  # fmt: skip


def report(
    job: JobSnap, att: AttemptSnap | None, worker_id: str, *, status: str, now: datetime,
    policy: Policy, exit_code: int | None = None, error: str | None = None,
    result: Mapping[str, Any] | None = None, sent_ns: int | None = None,
) -> tuple[list[Change], JobState]:  # fmt: skip
    """A worker says an attempt started or ended. Returns the changes and the job's state
    once they land; raises StaleAttempt for an attempt that is no longer its own."""
    number = att.number if att is not None else 0
    if att is None or att.worker_id != worker_id or att.outcome == AttemptOutcome.LOST:
        raise StaleAttempt(f"attempt {number} of {job.id} is not current on this worker")
    current = job.attempt == att.number and job.worker_id == worker_id
    if status == "declined":  # not the job's doing: it runs again elsewhere, now
        if not current or job.state not in ACTIVE_JOB_STATES:
            raise StaleAttempt(f"attempt {number} of {job.id} has ended")
        move = end_attempt(job, AttemptOutcome.LOST, now=now, policy=policy, reason=Reason.DECLINED,
                           error=error or "its worker declined it",
                           reported_ns=sent_ns)  # fmt: skip
        return [move], move.to
    if status == "running":
        if not current or job.state not in ACTIVE_JOB_STATES:
            raise StaleAttempt(f"attempt {number} of {job.id} has ended")
        if job.state is not JobState.ASSIGNED:
            return [], job.state
        started = UpdateAttempt(job.id, number, {"started_at": now, "reported_ns": sent_ns})
        move = MoveJob(job.id, job.tenant_id, JobState.ASSIGNED, JobState.RUNNING, number,
                       worker_id, {"started_at": now}, why=Why(detail=_waited(job, now)),
                       then=(started,))  # fmt: skip
        return [move], JobState.RUNNING
    outcome = AttemptOutcome(status)
    if current and job.state in ACTIVE_JOB_STATES:
        move = end_attempt(job, outcome, now=now, policy=policy, exit_code=exit_code,
                           error=error, result=result, reported_ns=sent_ns)  # fmt: skip
        if job.state is JobState.ASSIGNED:
            # It ended before its worker said it ran (a short job's running report goes in
            # its end's place): it started, as far as anyone can tell, when it ended.
            why = replace(move.why, detail={**move.why.detail, **_waited(job, now), "ran_s": 0.0})
            move = replace(move, fields={**move.fields, "started_at": now}, why=why,
                           then=tuple(replace(c, fields={**c.fields, "started_at": now})
                                      if isinstance(c, UpdateAttempt) else c
                                      for c in move.then))  # fmt: skip
        return [move], move.to
    if att.outcome == outcome.value:
        return [], job.state  # the same report again (a retry): applied once, acked again
    raise StaleAttempt(f"attempt {number} of {job.id} has ended")


def _seconds(d: timedelta) -> float:
    return round(max(d.total_seconds(), 0.0), 6)


def _waited(job: JobSnap, now: datetime) -> dict[str, float]:
    """How long a job waited from its submit to its first start (the dispatch latency)."""
    if job.attempt != 1 or job.created_at is None:
        return {}
    return {"waited_s": _seconds(now - job.created_at)}


def cancel(
    job: JobSnap, *, actor: str | None, now: datetime, why: Why | None = None
) -> list[Change]:
    """Cancel: a queued job ends at once; one on a worker waits for it to stop."""
    if job.state is JobState.CANCELLING:
        return []
    why = why or Why(actor=actor)
    if job.state is JobState.QUEUED:
        return [MoveJob(job.id, job.tenant_id, job.state, JobState.CANCELLED, job.attempt, None,
                        {"finished_at": now, "error": why.message or "cancelled before it ran"},
                        why, gang_id=job.gang_id)]  # fmt: skip
    if job.state in ACTIVE_JOB_STATES and job.worker_id:
        tell = Notify(job.worker_id, job.tenant_id, Cancel(job.id, job.attempt))
        return [MoveJob(job.id, job.tenant_id, job.state, JobState.CANCELLING, job.attempt,
                        job.worker_id, why=why, then=(tell,), gang_id=job.gang_id)]  # fmt: skip
    raise IllegalTransition(f"job {job.id} already {job.state}")


def preempt(job: JobSnap, by: str, why: Why | None = None) -> list[Change]:
    """Stop ``job`` for the higher-priority job ``by``: its worker is told to (SIGTERM, a
    grace, SIGKILL); it holds its slot and GPUs until it has stopped, then is queued again,
    its attempt ``preempted`` (not one of its retries). ``why``: another cause (its gang)."""
    if job.state not in (JobState.ASSIGNED, JobState.RUNNING) or not job.worker_id:
        return []
    tell = Notify(job.worker_id, job.tenant_id, Cancel(job.id, job.attempt))
    why = why or Why(message=f"preempted for {by}", detail={"by": by})
    return [MoveJob(job.id, job.tenant_id, job.state, JobState.PREEMPTING, job.attempt,
                    job.worker_id, why=why, then=(tell,), gang_id=job.gang_id)]  # fmt: skip


def _gang_ended(job: JobSnap | MoveJob, member: str, now: datetime) -> list[Change]:
    """A queued gang member whose gang can no longer run whole (``member`` has ended)."""
    said = f"member {member} of its gang has ended: the gang cannot run whole again"
    job_id = job.job_id if isinstance(job, MoveJob) else job.id
    why = Why(reason=Reason.GANG_STOPPED, message=said)
    return [MoveJob(job_id, job.tenant_id, JobState.QUEUED, JobState.FAILED, job.attempt, None,
                    {"finished_at": now, "error": said}, why, gang_id=job.gang_id)]  # fmt: skip


def gang_follows(
    move: MoveJob, rest: Iterable[JobSnap], *, now: datetime, policy: Policy
) -> list[Change]:
    """A gang runs as one: once a member has left its attempt other than by succeeding,
    the ``rest`` of the gang (all its members) follow. A member queued again (its attempt
    lost or failed, retries left) stops the others' attempts: they are stopped as a
    preemption is (holding their slots and GPUs until their workers have stopped them,
    their attempts not counted among their retries) and queued again with it. A member
    that ended for good (failed, cancelled) ends the others, cancelled; so does one queued
    again when another has already ended (the gang cannot run whole again). What follows
    carries ``Reason.GANG_STOPPED`` and leads no further."""
    if move.why.reason is Reason.GANG_STOPPED:
        return []
    others = [j for j in rest if j.id != move.job_id]
    out: list[Change] = []
    if move.to is JobState.SUCCEEDED:
        # It finished as its gang was being stopped: those already queued again can never
        # run whole.
        return [c for j in others if j.state is JobState.QUEUED
                for c in _gang_ended(j, move.job_id, now)]  # fmt: skip
    again = move.to is JobState.QUEUED and move.frm in ACTIVE_JOB_STATES
    if not (again or move.to in (JobState.FAILED, JobState.CANCELLED)):
        return []
    ended = next((j for j in others if j.state in TERMINAL_JOB_STATES), None)
    if again and ended is not None:
        out += _gang_ended(move, ended.id, now)
        again = False
    said = f"member {move.job_id} of its gang {'ended' if again else move.to.value}"
    why = Why(reason=Reason.GANG_STOPPED, message=said)
    for job in others:
        if job.state in TERMINAL_JOB_STATES:
            continue
        if again:
            out += preempt(job, by=move.job_id, why=why)
        else:
            out += cancel(job, actor=None, now=now, why=why)
    return out


# ---- workers ----------------------------------------------------------------------------


def create_worker(values: Mapping[str, Any], *, actor: str | None) -> list[Change]:
    return [InsertWorker(values={**values, "status": WorkerStatus.OFFLINE.value},
                         why=Why(actor=actor))]  # fmt: skip


def register(
    worker: WorkerSnap, active: Iterable[JobSnap], running: Iterable[Ref], *,
    fields: Mapping[str, Any], capabilities: Mapping[str, Any], now: datetime, policy: Policy,
    said: str | None = None, sent_ns: int | None = None,
    attempts: Mapping[Ref, AttemptSnap] | None = None,
) -> tuple[list[Change], list[Ref], list[Ref]]:  # fmt: skip
    """The sync point: the worker says what it runs; returns (changes, keep, stop).

    Its outbox starts anew: what it still has to hear (assignments it never received, a
    cancel, a drain) is sent again; attempts it should hold but does not are lost."""
    newest = max([worker.heard_ns or 0,
                  *(a.reported_ns or 0 for a in (attempts or {}).values())])  # fmt: skip
    if sent_ns is not None and sent_ns < newest:
        # Made before a request of this worker's already taken (it waited in a frozen
        # coordinator): what it says it runs is out of date, and acting on it would lose
        # what came after it.
        raise StaleRegistration(f"a newer request of worker {worker.id} was taken")
    fields = {**fields, "last_heartbeat": now, "offline_since": None, "taken_since_register": 0}
    if sent_ns is not None:
        fields["heard_ns"] = sent_ns
    out: list[Change] = []
    if worker.status is WorkerStatus.DRAINING:
        out.append(UpdateWorker(worker.id, fields))  # a drain outlives a reconnect
    else:
        out.append(MoveWorker(worker.id, worker.tenant_id, worker.status,
                              WorkerStatus.CONNECTING, fields))  # fmt: skip
    out += [Record(Kind.WORKER_REGISTERED, worker.tenant_id, worker_id=worker.id,
                   why=Why(detail=capabilities)),
            ForgetDrop(worker.id), ClearOutbox(worker.id)]  # fmt: skip
    out += constrained(worker, said)
    left = {j.id: j for j in active}
    keep: list[Ref] = []
    stop: list[Ref] = []
    for ref in running:
        job = left.pop(ref[0], None)
        if job is not None and job.attempt == ref[1]:
            keep.append(ref)
            if job.state in STOPPING_JOB_STATES:
                out.append(Notify(worker.id, worker.tenant_id, Cancel(job.id, job.attempt)))
        else:
            stop.append(ref)
            if job is not None:  # it runs an older attempt than the current one
                left[job.id] = job
    gone = []
    for job in left.values():
        if job.state is JobState.ASSIGNED:  # not received yet: send it again, and the grace
            held = (job.row["gpu_ids"] if job.row is not None else None) or ()
            meet = job.row["rendezvous"] if job.row is not None else None
            out += [Notify(worker.id, worker.tenant_id,
                           Assign(job.id, job.attempt, job.row, held, meet)),
                    UpdateAttempt(job.id, job.attempt, {"assigned_at": now})]  # fmt: skip
        else:
            gone.append(job)
    out += lose(gone, Reason.CAME_BACK_WITHOUT, "the worker came back without this attempt",
                now=now, policy=policy)  # fmt: skip
    if worker.status is WorkerStatus.DRAINING:
        out.append(Notify(worker.id, worker.tenant_id, Drain()))
    return out, keep, stop


def stream_opened(worker: WorkerSnap, owner: str) -> list[Change]:
    """Its event stream is open: a registered worker starts taking work."""
    if worker.status is WorkerStatus.OFFLINE:
        raise NotRegistered(f"worker {worker.id} must register before it opens its stream")
    out: list[Change] = [UpdateWorker(worker.id, {"stream_owner": owner})]
    if worker.status is WorkerStatus.CONNECTING:
        out.append(MoveWorker(worker.id, worker.tenant_id, worker.status, WorkerStatus.IDLE))
    return out


def heartbeat(
    worker: WorkerSnap, active: Iterable[JobSnap], attempts: Mapping[Ref, AttemptSnap],
    listed: Collection[Ref], *, now: datetime, policy: Policy, said: str | None = None,
    listening_since: datetime | None = None, sent_ns: int | None = None,
) -> tuple[list[Change], list[Ref]]:  # fmt: skip
    """It is alive. Returns the changes and the listed attempts it must stop.

    An attempt it should hold but does not list (it declined the assignment, or ended the
    attempt without a word) is lost once the grace for an assignment on its way is over:
    a grace that counts only from ``listening_since`` (an assignment stuck in a frozen
    coordinator's stream was on its way all along)."""
    current = {j.id: j for j in active}
    stop = [r for r in listed if r[0] not in current or current[r[0]].attempt != r[1]]
    cutoff = now - timedelta(seconds=policy.unclaimed_grace_s)
    graced = listening_since is None or listening_since <= cutoff
    heard: dict[str, Any] = {"last_heartbeat": now}
    if sent_ns is not None and sent_ns > (worker.heard_ns or 0):
        heard["heard_ns"] = sent_ns
    out: list[Change] = [UpdateWorker(worker.id, heard)]
    out += constrained(worker, said)
    unclaimed = [
        j for j in current.values()
        if graced and (j.id, j.attempt) not in listed
        and (att := attempts.get((j.id, j.attempt))) is not None and att.assigned_at < cutoff
    ]  # fmt: skip
    out += lose(unclaimed, Reason.NOT_LISTED, "its worker does not hold this attempt",
                now=now, policy=policy)  # fmt: skip
    return out, stop


def constrained(worker: WorkerSnap, said: str | None) -> list[Change]:
    """It says whether it takes new work (``said``: why not; None: it does). A change is
    recorded; the scheduler offers nothing to a constrained worker."""
    if said == worker.constrained:
        return []
    kind = Kind.WORKER_CONSTRAINED if said else Kind.WORKER_UNCONSTRAINED
    return [UpdateWorker(worker.id, {"constrained": said}),
            Record(kind, worker.tenant_id, worker_id=worker.id,
                   why=Why(message=said or worker.constrained))]  # fmt: skip


def go_offline(
    worker: WorkerSnap, active: Iterable[JobSnap], reason: Reason, message: str, *,
    now: datetime, policy: Policy,
) -> list[Change]:  # fmt: skip
    """Mark it offline and lose its attempts (requeued while retries remain)."""
    if worker.status is WorkerStatus.OFFLINE:
        return []
    lost = lose(active, reason, message, now=now, policy=policy)
    return [MoveWorker(worker.id, worker.tenant_id, worker.status, WorkerStatus.OFFLINE,
                       {"offline_since": now}, Why(reason=reason, message=message),
                       then=(*lost, EndStream(worker.id)))]  # fmt: skip


def drain(worker: WorkerSnap, *, actor: str | None) -> list[Change]:
    if worker.status not in (WorkerStatus.CONNECTING, WorkerStatus.IDLE):
        return []
    return [MoveWorker(worker.id, worker.tenant_id, worker.status, WorkerStatus.DRAINING,
                       why=Why(actor=actor),
                       then=(Notify(worker.id, worker.tenant_id, Drain()),))]  # fmt: skip


def pause(worker: WorkerSnap, paused: bool, *, now: datetime, actor: str | None) -> list[Change]:
    """Its admin stops (or lets again) new work go to it; what it runs goes on."""
    if worker.paused == paused:
        return []
    kind = Kind.WORKER_PAUSED if paused else Kind.WORKER_RESUMED
    return [UpdateWorker(worker.id, {"paused_at": now if paused else None}),
            Record(kind, worker.tenant_id, worker_id=worker.id, why=Why(actor=actor))]  # fmt: skip


def rotate_token(worker: WorkerSnap, token_hash: str, *, actor: str | None) -> list[Change]:
    """A new token; the old one's open stream ends once this commits."""
    # A certificate it enrolled with is revoked with it: its key no longer matches.
    revoked = {"token_hash": token_hash, "cert_pem": None, "cert_expires_at": None}
    return [UpdateWorker(worker.id, revoked),
            Record(Kind.WORKER_TOKEN_ROTATED, worker.tenant_id, worker_id=worker.id,
                   why=Why(actor=actor)),
            EndStream(worker.id)]  # fmt: skip


def remove_worker(
    worker: WorkerSnap, *, actor: str | None, reason: Reason | None = None
) -> list[Change]:
    return [DeleteWorker(worker.id, worker.tenant_id, Why(actor=actor, reason=reason))]


def taken(worker: WorkerSnap, count: int) -> list[Change]:
    """An ephemeral worker takes one job per registration: count what it was given."""
    if worker.worker_type is not WorkerType.EPHEMERAL or not count:
        return []
    return [UpdateWorker(worker.id, {"taken_since_register": worker.taken + count})]
