"""Fleet service: worker tokens, registration, heartbeats, drain, rotation, removal."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import RowMapping

from corral.model import (
    AlreadyExists,
    AttemptOutcome,
    JobState,
    NotFound,
    WorkerBusy,
    WorkerStatus,
    WorkerType,
)
from corral.protocol import (
    AttemptRef,
    GpuInfo,
    HeartbeatRequest,
    HeartbeatResponse,
    JobAssign,
    JobCancel,
    RegisterRequest,
    RegisterResponse,
    WorkerCreate,
    WorkerCreated,
    WorkerDrain,
    WorkerList,
    WorkerView,
)
from corral.server.auth import Identity, WorkerIdentity, hash_secret, new_id, new_secret
from corral.server.core import Core, Tx
from corral.server.leases import end_attempt, go_offline, settle_worker
from corral.store import as_utc, streams
from corral.store import jobs as jobs_q
from corral.store import workers as workers_q


def view(row: RowMapping, running: int) -> WorkerView:
    gpus = [GpuInfo.model_validate(g) for g in row["gpus"]]
    return WorkerView(
        id=row["id"],
        name=row["name"],
        status=WorkerStatus(row["status"]),
        worker_type=WorkerType(row["worker_type"]),
        labels=row["labels"],
        hostname=row["hostname"],
        cpu_count=row["cpu_count"],
        memory_bytes=row["memory_bytes"],
        gpu_count=len(gpus),
        gpus=gpus,
        slots=row["slots"],
        running=running,
        last_heartbeat=as_utc(row["last_heartbeat"]),
        created_at=as_utc(row["created_at"]),
    )


async def _get(t: Tx, tenant_id: str, worker_id: str, *, lock: bool = False) -> RowMapping:
    row = await workers_q.get(t.conn, tenant_id, worker_id, for_update=lock)
    if row is None:
        raise NotFound(f"no worker {worker_id}")
    return row


async def _view(t: Tx, row: RowMapping) -> WorkerView:
    return view(row, len(await jobs_q.active_on(t.conn, row["id"])))


async def create(core: Core, who: Identity, body: WorkerCreate) -> WorkerCreated:
    token, worker_id = new_secret("wt"), new_id("w")
    async with core.tx() as t:
        if any(r["name"] == body.name for r in await workers_q.all_of(t.conn, who.tenant_id)):
            raise AlreadyExists(f"a worker named {body.name!r} exists", field="name")
        await workers_q.insert(t.conn, {
            "id": worker_id, "tenant_id": who.tenant_id, "name": body.name,
            "token_hash": hash_secret(token), "worker_type": body.worker_type.value,
            "labels": body.labels, "status": WorkerStatus.OFFLINE.value, "gpus": [],
            "slots": 1, "created_at": core.clock.now(), "offline_since": core.clock.now(),
        })  # fmt: skip
    return WorkerCreated(id=worker_id, worker_id=worker_id, name=body.name, token=token)


async def listing(core: Core, tenant_id: str) -> WorkerList:
    async with core.tx() as t:
        rows = await workers_q.all_of(t.conn, tenant_id)
        load = await jobs_q.load_by_worker(t.conn)
    return WorkerList(workers=[view(r, load.get(r["id"], (0, 0))[0]) for r in rows])


async def remove(core: Core, tenant_id: str, worker_id: str) -> None:
    async with core.tx() as t:
        row = await _get(t, tenant_id, worker_id)
        if not await workers_q.delete_offline(t.conn, row["id"]):
            raise WorkerBusy(f"worker {worker_id} is {row['status']}; drain it and let it go first")


async def drain(core: Core, tenant_id: str, worker_id: str) -> WorkerView:
    async with core.tx() as t:
        row = await _get(t, tenant_id, worker_id, lock=True)  # against a register meanwhile
        status = WorkerStatus(row["status"])
        if status in (WorkerStatus.CONNECTING, WorkerStatus.IDLE, WorkerStatus.BUSY):
            await workers_q.set_status(t.conn, worker_id, status, WorkerStatus.DRAINING)
            await _push(core, t, row, WorkerDrain().model_dump())
        return await _view(t, await _get(t, tenant_id, worker_id))


async def rotate(core: Core, tenant_id: str, worker_id: str) -> WorkerCreated:
    token = new_secret("wt")
    async with core.tx() as t:
        row = await _get(t, tenant_id, worker_id)
        await workers_q.update_fields(t.conn, worker_id, token_hash=hash_secret(token))
    core.hub.end_stream(worker_id)  # the old token's open stream ends now
    return WorkerCreated(id=worker_id, worker_id=worker_id, name=row["name"], token=token)


async def _push(core: Core, t: Tx, row: RowMapping, data: dict[str, object]) -> None:
    await streams.push_event(t.conn, worker_id=row["id"], tenant_id=row["tenant_id"],
                             data=data, now=core.clock.now())  # fmt: skip
    t.workers.add(row["id"])


def _assign_event(job: RowMapping) -> dict[str, object]:
    return JobAssign(job_id=job["id"], attempt=job["attempt"], name=job["name"],
                     kind=job["kind"], command=job["command"], env=job["env"],
                     timeout_s=job["timeout_s"], gpus=job["gpus"]).model_dump()  # fmt: skip


async def register(core: Core, w: WorkerIdentity, body: RegisterRequest) -> RegisterResponse:
    """Sync point: the worker says what it runs, we say what to keep; its outbox starts anew."""
    now = core.clock.now()
    keep: list[AttemptRef] = []
    stop: list[AttemptRef] = []
    async with core.tx() as t:
        row = await _get(t, w.tenant_id, w.worker_id, lock=True)  # against a drain meanwhile
        draining = row["status"] == WorkerStatus.DRAINING
        await workers_q.update_fields(
            t.conn, w.worker_id,
            status=WorkerStatus.DRAINING.value if draining else WorkerStatus.CONNECTING.value,
            name=body.name or row["name"], hostname=body.hostname, cpu_count=body.cpu_count,
            memory_bytes=body.memory_bytes, gpus=[g.model_dump() for g in body.gpus],
            labels={**row["labels"], **body.labels}, slots=body.slots,
            worker_type=(WorkerType.PERSISTENT if body.persistent else WorkerType.EPHEMERAL).value,
            last_heartbeat=now, offline_since=None, taken_since_register=0,
        )  # fmt: skip
        core.hub.forget(w.worker_id)
        await streams.clear_events(t.conn, w.worker_id)
        active = {r["id"]: r for r in await jobs_q.active_on(t.conn, w.worker_id)}
        for ref in body.running:
            job = active.pop(ref.job_id, None)
            if job is not None and job["attempt"] == ref.attempt:
                keep.append(ref)
                if job["state"] == JobState.CANCELLING:
                    await _push(core, t, row, JobCancel(job_id=ref.job_id, attempt=ref.attempt)
                                .model_dump())  # fmt: skip
            else:
                stop.append(ref)
                if job is not None:  # it runs an older attempt than the current one
                    active[job["id"]] = job
        for job in active.values():
            if job["state"] == JobState.ASSIGNED:
                await _push(core, t, row, _assign_event(job))  # not received yet: send again
                # Handed over anew: the grace for claiming it starts now, not at the first.
                await jobs_q.update_attempt(t.conn, job["id"], job["attempt"], assigned_at=now)
            else:
                await end_attempt(core, t, job, AttemptOutcome.LOST,
                                  error="the worker came back without this attempt")  # fmt: skip
        if draining:
            await _push(core, t, row, WorkerDrain().model_dump())
        t.kick = True
        name = body.name or row["name"]
    return RegisterResponse(worker_id=w.worker_id, name=name, keep=keep, stop=stop,
                            heartbeat_interval_s=core.settings.heartbeat_interval_s)  # fmt: skip


async def stream_opened(core: Core, w: WorkerIdentity, session: int) -> None:
    async with core.tx() as t:
        row = await _get(t, w.tenant_id, w.worker_id)
        await workers_q.update_fields(t.conn, w.worker_id, stream_owner=core.hub.owner(session))
        status = WorkerStatus(row["status"])
        if status is WorkerStatus.OFFLINE:  # reaped meanwhile: it counts as a new connection
            await workers_q.set_status(t.conn, w.worker_id, status, WorkerStatus.CONNECTING,
                                       offline_since=None)  # fmt: skip
            status = WorkerStatus.CONNECTING
        if status is WorkerStatus.CONNECTING:
            await workers_q.set_status(t.conn, w.worker_id, status, WorkerStatus.IDLE)
            await settle_worker(t, w.worker_id)
        t.kick = True


async def heartbeat(core: Core, w: WorkerIdentity, body: HeartbeatRequest) -> HeartbeatResponse:
    """Note it is alive; compare what it runs with what it should run."""
    now = core.clock.now()
    cutoff = now - timedelta(seconds=core.settings.unclaimed_grace_s)
    async with core.tx() as t:
        row = await _get(t, w.tenant_id, w.worker_id)
        await workers_q.update_fields(t.conn, w.worker_id, last_heartbeat=now)
        active = {r["id"]: r for r in await jobs_q.active_on(t.conn, w.worker_id)}
        listed = {(ref.job_id, ref.attempt) for ref in body.running}
        stop = [
            ref for ref in body.running
            if ref.job_id not in active or active[ref.job_id]["attempt"] != ref.attempt
        ]  # fmt: skip
        for job in active.values():
            if (job["id"], job["attempt"]) in listed:
                continue
            # Not listed: it declined the assignment or ended the attempt without a word.
            # Past the grace (the assignment may still be on its way), the attempt is lost.
            att = await jobs_q.get_attempt(t.conn, job["id"], job["attempt"])
            if att is not None and as_utc(att["assigned_at"]) < cutoff:
                await end_attempt(core, t, job, AttemptOutcome.LOST,
                                  error="its worker does not hold this attempt")  # fmt: skip
    return HeartbeatResponse(status=WorkerStatus(row["status"]), stop=stop)


async def disconnect(core: Core, w: WorkerIdentity) -> None:
    async with core.tx() as t:
        row = await _get(t, w.tenant_id, w.worker_id)
        await go_offline(core, t, row, "the worker disconnected")


async def dispatchable(t: Tx, connected: set[str]) -> list[tuple[RowMapping, int, int]]:
    """Connected IDLE/BUSY workers with what they hold: (row, attempts, gpus)."""
    rows = await workers_q.by_ids(t.conn, connected)
    load = await jobs_q.load_by_worker(t.conn)
    out = []
    for r in rows:
        if r["status"] not in (WorkerStatus.IDLE, WorkerStatus.BUSY):
            continue
        held, gpus = load.get(r["id"], (0, 0))
        out.append((r, held, gpus))
    return out
