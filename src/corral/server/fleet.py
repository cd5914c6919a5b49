"""Fleet service: worker tokens, registration, the stream, heartbeats, drain, removal.

Each call reads what the decision needs, asks ``corral.model.decide``, and applies the
answer in the same transaction.
"""

from __future__ import annotations

from sqlalchemy.engine import RowMapping

from corral.model import (
    AlreadyExists,
    NotFound,
    PermissionDenied,
    Role,
    TenantStatus,
    WorkerBusy,
    WorkerStatus,
    WorkerType,
    decide,
)
from corral.model.history import Reason
from corral.model.snapshot import AttemptSnap, JobSnap, WorkerLoad, WorkerSnap
from corral.model.worker import labels_in_effect, shown_status
from corral.protocol import (
    AttemptRef,
    GpuInfo,
    HeartbeatRequest,
    HeartbeatResponse,
    RegisterRequest,
    RegisterResponse,
    WorkerCreate,
    WorkerCreated,
    WorkerList,
    WorkerPause,
    WorkerView,
)
from corral.server.auth import Identity, WorkerIdentity, hash_secret, new_id, new_secret
from corral.server.core import Core, Tx
from corral.store import as_utc
from corral.store import jobs as jobs_q
from corral.store import keys as keys_q
from corral.store import workers as workers_q


def view(row: RowMapping, load: WorkerLoad | None) -> WorkerView:
    gpus = [GpuInfo.model_validate(g) for g in row["gpus"]]
    load = load or WorkerLoad()
    running, paused = load.attempts, row["paused_at"] is not None
    return WorkerView(
        id=row["id"],
        name=row["name"],
        status=shown_status(WorkerStatus(row["status"]), running, bool(row["constrained"]), paused),
        worker_type=WorkerType(row["worker_type"]),
        labels=row["labels"],
        allowed_labels=row["allowed_labels"],
        hostname=row["hostname"],
        cpu_count=row["cpu_count"],
        cpu_model=row["cpu_model"],
        memory_bytes=row["memory_bytes"],
        memory_buffer=row["memory_buffer"],
        accelerator=row["accelerator"],
        gpu_count=len(gpus),
        gpus=gpus,
        gpus_in_use=sorted(load.gpu_ids),
        slots=row["slots"],
        running=running,
        paused=paused,
        local=row["local"],
        shared=row["shared"],
        last_heartbeat=as_utc(row["last_heartbeat"]),
        created_at=as_utc(row["created_at"]),
        constrained=row["constrained"],
        cert_expires_at=as_utc(row["cert_expires_at"]),
    )


async def _get(t: Tx, tenant_id: str, worker_id: str, *, lock: bool = False) -> RowMapping:
    row = await workers_q.get(t.conn, tenant_id, worker_id, for_update=lock)
    if row is None:
        raise NotFound(f"no worker {worker_id}")
    return row


async def _view(t: Tx, worker_id: str, tenant_id: str) -> WorkerView:
    row = await _get(t, tenant_id, worker_id)
    return view(row, (await jobs_q.load_by_worker(t.conn, [worker_id])).get(worker_id))


async def _active(t: Tx, worker_id: str) -> list[JobSnap]:
    return [JobSnap.of(r) for r in await jobs_q.active_on(t.conn, worker_id)]


async def create(core: Core, who: Identity, body: WorkerCreate) -> WorkerCreated:
    if body.shared and who.role is not Role.OPERATOR:
        raise PermissionDenied("only an operator may create a shared worker (one that runs"
                               " every tenant's jobs)", field="shared")  # fmt: skip
    token, worker_id = new_secret("wt"), new_id("w")
    async with core.tx(who.key_id) as t:
        if any(r["name"] == body.name for r in await workers_q.all_of(t.conn, who.tenant_id)):
            raise AlreadyExists(f"a worker named {body.name!r} exists", field="name")
        await t.apply(decide.create_worker({
            "id": worker_id, "tenant_id": who.tenant_id, "name": body.name,
            "token_hash": hash_secret(token), "worker_type": body.worker_type.value,
            "labels": body.labels, "admin_labels": body.labels,
            "allowed_labels": list(dict.fromkeys(body.allow_labels)), "local": body.local,
            "shared": body.shared,
            "gpus": [], "slots": 1, "created_at": t.now,
            "offline_since": t.now,
        }, actor=who.key_id))  # fmt: skip
    return WorkerCreated(id=worker_id, worker_id=worker_id, name=body.name, token=token)


async def listing(
    core: Core, tenant_id: str, *, limit: int | None = None, offset: int = 0
) -> WorkerList:
    """The tenant's workers, oldest first; ``limit`` and ``offset``: a page of them."""
    async with core.tx() as t:
        rows = await workers_q.all_of(t.conn, tenant_id, limit=limit, offset=offset)
        load = await jobs_q.load_by_worker(t.conn, [r["id"] for r in rows])
    return WorkerList(workers=[view(r, load.get(r["id"])) for r in rows])


async def count(core: Core, tenant_id: str) -> int:
    async with core.tx() as t:
        return await workers_q.count_of(t.conn, tenant_id)


async def get(core: Core, tenant_id: str, worker_id: str) -> WorkerView:
    async with core.tx() as t:
        return await _view(t, worker_id, tenant_id)


async def remove(core: Core, who: Identity, worker_id: str) -> None:
    async with core.tx(who.key_id) as t:
        row = await _get(t, who.tenant_id, worker_id)
        if await t.apply(decide.remove_worker(WorkerSnap.of(row), actor=who.key_id)):
            raise WorkerBusy(f"worker {worker_id} is {row['status']}; drain it and let it go first")
    core.credentials.forget_worker(worker_id)


async def drain(core: Core, who: Identity, worker_id: str) -> WorkerView:
    async with core.tx(who.key_id) as t:
        row = await _get(t, who.tenant_id, worker_id, lock=True)  # against a register meanwhile
        await t.apply(decide.drain(WorkerSnap.of(row), actor=who.key_id))
        return await _view(t, worker_id, who.tenant_id)


async def pause(core: Core, who: Identity, worker_id: str, paused: bool) -> WorkerView:
    async with core.tx(who.key_id) as t:
        row = await _get(t, who.tenant_id, worker_id, lock=True)
        await t.apply(decide.pause(WorkerSnap.of(row), paused, now=t.now, actor=who.key_id))
        return await _view(t, worker_id, who.tenant_id)


async def rotate(core: Core, who: Identity, worker_id: str) -> WorkerCreated:
    token = new_secret("wt")
    async with core.tx(who.key_id) as t:
        row = await _get(t, who.tenant_id, worker_id)
        await t.apply(decide.rotate_token(WorkerSnap.of(row), hash_secret(token),
                                          actor=who.key_id))  # fmt: skip
    core.credentials.forget_worker(worker_id)
    return WorkerCreated(id=worker_id, worker_id=worker_id, name=row["name"], token=token)


async def register(
    core: Core, w: WorkerIdentity, body: RegisterRequest, address: str | None
) -> RegisterResponse:
    """Sync point: the worker says what it runs, we say what to keep; its outbox starts anew."""
    async with core.tx(w.worker_id) as t:
        # The tenant first, held until commit: a suspension under way is waited for and
        # seen, and one that comes after finds this worker registered and takes it offline.
        # (Tenant before worker before job: the suspension locks in that order too.)
        tenant = await keys_q.tenant(t.conn, w.tenant_id, share=True)
        row = await core.credentials.verify(t.conn, w, lock=True)  # against a drain meanwhile
        if tenant is None or tenant["status"] != TenantStatus.ACTIVE:
            raise PermissionDenied(f"tenant {w.tenant_id} is suspended: this worker is refused")
        gpus = [g.model_dump() for g in body.gpus]
        worker_type = WorkerType.PERSISTENT if body.persistent else WorkerType.EPHEMERAL
        # Its admin decides what it is: its name and labels stay theirs; it adds what it
        # detects (GPUs, memory, hostname) and only the labels its admin allowed.
        name: str = row["name"]
        labels = labels_in_effect(row["admin_labels"], row["allowed_labels"], body.labels)
        fields = {
            "hostname": body.hostname,
            "cpu_count": body.cpu_count, "memory_bytes": body.memory_bytes, "gpus": gpus,
            "cpu_model": body.cpu_model, "accelerator": body.accelerator,
            "memory_buffer": body.memory_buffer, "address": (address or "")[:100] or None,
            "labels": labels, "slots": body.slots, "prefetch": body.prefetch,
            "worker_type": worker_type.value,
        }  # fmt: skip
        capabilities = {
            "address": address, "hostname": body.hostname, "cpu_count": body.cpu_count,
            "memory_bytes": body.memory_bytes, "gpus": [g.name for g in body.gpus],
            "cpu_model": body.cpu_model, "accelerator": body.accelerator,
            "slots": body.slots, "prefetch": body.prefetch, "labels": fields["labels"],
            "worker_type": worker_type.value,
            "version": body.version, "running": len(body.running),
        }  # fmt: skip
        active = await _active(t, w.worker_id)
        rows = await jobs_q.attempts_for(t.conn, [(j.id, j.attempt) for j in active])
        changes, keep, stop = decide.register(
            WorkerSnap.of(row), active,
            [(r.job_id, r.attempt) for r in body.running],
            fields=fields, capabilities=capabilities, now=t.now, policy=t.policy,
            said=body.constrained, sent_ns=body.sent_ns,
            attempts={(a["job_id"], a["number"]): AttemptSnap.of(a) for a in rows},
        )  # fmt: skip
        await t.apply(changes)
    return RegisterResponse(
        worker_id=w.worker_id, name=name,
        keep=[AttemptRef(job_id=j, attempt=a) for j, a in keep],
        stop=[AttemptRef(job_id=j, attempt=a) for j, a in stop],
        heartbeat_interval_s=core.settings.heartbeat_interval_s,
        heartbeat_timeout_s=core.settings.heartbeat_timeout_s,
    )  # fmt: skip


async def check_registered(core: Core, w: WorkerIdentity) -> None:
    """Before its stream opens: a worker that never registered (or was reaped since) is
    told to register first (409 not_registered) rather than sent work."""
    async with core.tx() as t:
        decide.stream_opened(WorkerSnap.of(await core.credentials.verify(t.conn, w)), "")


async def stream_opened(core: Core, w: WorkerIdentity, session: int) -> bool:
    """False when it was reaped between the check and now: its stream ends at once."""
    async with core.tx(w.worker_id) as t:
        row = await core.credentials.verify(t.conn, w)
        if row["status"] == WorkerStatus.OFFLINE:
            return False
        await t.apply(decide.stream_opened(WorkerSnap.of(row), core.hub.owner(session)))
    return True


async def heartbeat(core: Core, w: WorkerIdentity, body: HeartbeatRequest) -> HeartbeatResponse:
    """Note it is alive; compare what it runs with what it should run."""
    async with core.tx(w.worker_id) as t:
        row = await core.credentials.verify(t.conn, w)
        active = await _active(t, w.worker_id)
        rows = await jobs_q.attempts_for(t.conn, [(j.id, j.attempt) for j in active])
        atts = {(a["job_id"], a["number"]): AttemptSnap.of(a) for a in rows}
        listed = dict.fromkeys((r.job_id, r.attempt) for r in body.running)
        changes, stop = decide.heartbeat(WorkerSnap.of(row), active, atts, listed, now=t.now,
                                         policy=t.policy, said=body.constrained,
                                         listening_since=core.listening_since,
                                         sent_ns=body.sent_ns)  # fmt: skip
        await t.apply(changes)
    status = WorkerStatus(row["status"])
    if status is WorkerStatus.IDLE and row["paused_at"] is not None:
        status = WorkerStatus.PAUSED  # its admin's pause, for the worker's own page to show
    return HeartbeatResponse(status=status,
                             stop=[AttemptRef(job_id=j, attempt=a) for j, a in stop])  # fmt: skip


async def pause_self(core: Core, w: WorkerIdentity, paused: bool) -> WorkerPause:
    """The worker's own pause (its local page): the same change its admin's makes."""
    async with core.tx(w.worker_id) as t:
        row = await core.credentials.verify(t.conn, w, lock=True)
        await t.apply(decide.pause(WorkerSnap.of(row), paused, now=t.now, actor=w.worker_id))
    return WorkerPause(paused=paused)


async def disconnect(core: Core, w: WorkerIdentity) -> None:
    async with core.tx(w.worker_id) as t:
        row = await core.credentials.verify(t.conn, w, lock=True)
        await t.apply(decide.go_offline(
            WorkerSnap.of(row), await _active(t, w.worker_id), Reason.DISCONNECTED,
            "the worker disconnected", now=t.now, policy=t.policy,
        ))  # fmt: skip
