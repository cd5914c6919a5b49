"""The worker's side of checkpoints: what the job's ``corral.sdk.checkpoint()`` left is packed,
handed to the coordinator's upload (here a function that keeps what it was given) and taken
away; what a restore puts back is what ``resume()`` reads."""

from __future__ import annotations

import os
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from corral import sdk
from corral.model import StaleAttempt, TooLarge, Unavailable
from corral.protocol import ArtifactView
from corral.worker.checkpoints import CheckpointShipper, restore
from corral.worker.workdir import AttemptFiles, checkpoint_dir, prepare_workdir, resume_dir


class Coordinator:
    """Stands in for the upload endpoint: keeps each archive's members, or refuses."""

    def __init__(self) -> None:
        self.got: list[tuple[int, str, dict[str, bytes]]] = []
        self.refuse: Exception | None = None

    async def put(self, archive: Path, digest: str, step: int, name: str) -> ArtifactView:
        if self.refuse is not None:
            raise self.refuse
        with tarfile.open(archive) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
        self.got.append((step, name, files))
        return ArtifactView(id=len(self.got), job_id="j", attempt=1, kind="checkpoint",
                            name=name, step=step, digest=digest, size=len(files),
                            created_at=datetime.now(UTC))  # fmt: skip


@pytest.fixture
def attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    workdir = tmp_path / "attempt"
    prepare_workdir(workdir)
    files = AttemptFiles.create(workdir)
    monkeypatch.setenv(sdk.ENV_CHECKPOINT_DIR, str(checkpoint_dir(workdir)))
    coord = Coordinator()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    shipper = CheckpointShipper(files, coord.put, tmp_dir=tmp, log=structlog.get_logger())
    yield workdir, coord, shipper
    files.close()


async def test_each_checkpoint_is_stored_in_step_order_and_taken_away(attempt) -> None:
    workdir, coord, shipper = attempt
    sdk.checkpoint(b"two", step=2)
    sdk.checkpoint(b"one", step=1, name="early")
    (workdir / "w").mkdir()
    (workdir / "w" / "a.bin").write_bytes(b"A")
    sdk.checkpoint(workdir / "w", step=3)
    assert await shipper.ship() == 0
    assert [(s, n) for s, n, _ in coord.got] == [(1, "early"), (2, "data"), (3, "w")]
    assert coord.got[0][2]["data"] == b"one" and coord.got[2][2]["w/a.bin"] == b"A"
    assert "meta.json" in coord.got[0][2]
    assert os.listdir(checkpoint_dir(workdir)) == []
    assert not os.listdir(shipper.tmp_dir)  # no archive left behind


async def test_one_the_coordinator_could_not_take_stays_for_the_next_look(attempt) -> None:
    workdir, coord, shipper = attempt
    sdk.checkpoint(b"x", step=1)
    coord.refuse = Unavailable("the database did not answer")
    assert await shipper.ship() == 1 and len(os.listdir(checkpoint_dir(workdir))) == 1
    coord.refuse = None
    await shipper.flush(5)
    assert len(coord.got) == 1 and os.listdir(checkpoint_dir(workdir)) == []


async def test_a_stale_attempt_stores_nothing_more(attempt) -> None:
    _, coord, shipper = attempt
    sdk.checkpoint(b"x", step=1)
    sdk.checkpoint(b"y", step=2)
    coord.refuse = StaleAttempt("attempt 1 of j is not current on this worker")
    await shipper.ship()
    assert shipper.stale and coord.got == []


async def test_a_link_in_a_checkpoint_is_not_followed(attempt, tmp_path: Path) -> None:
    workdir, coord, shipper = attempt
    secret = tmp_path / "secret"
    secret.write_text("the worker's")
    (workdir / "w").mkdir()
    (workdir / "w" / "real.bin").write_bytes(b"R")
    sdk.checkpoint(workdir / "w", step=1)
    entry = next(checkpoint_dir(workdir).iterdir())
    (entry / "w" / "leak").symlink_to(secret)  # swapped in after checkpoint() returned
    await shipper.ship()
    assert set(coord.got[0][2]) == {"meta.json", "w/real.bin"}


@pytest.mark.skipif(os.geteuid() != 0, reason="files of another user need root")
async def test_an_isolated_attempt_ships_only_its_users_plain_files(attempt, tmp_path) -> None:
    workdir, coord, shipper = attempt
    shipper.files.owner = 65534
    sdk.checkpoint(b"mine", step=1)
    entry = next(checkpoint_dir(workdir).iterdir())
    (entry / "roots").write_text("the worker's")  # not the attempt user's
    shared = tmp_path / "shared"
    shared.write_text("a second name for it")
    os.chown(shared, 65534, 65534)
    os.link(shared, entry / "hardlink")  # the user's, but with two links
    for path in (checkpoint_dir(workdir), entry, entry / "data", entry / "meta.json"):
        os.lchown(path, 65534, 65534)
    await shipper.ship()
    assert set(coord.got[0][2]) == {"meta.json", "data"}


def test_a_restored_checkpoint_is_what_resume_reads(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    monkeypatch.setenv(sdk.ENV_CHECKPOINT_DIR, str(src))
    sdk.checkpoint(b"state", step=7)
    entry = next(src.iterdir())
    archive = tmp_path / "ck.tar"
    with tarfile.open(archive, "w") as tar:
        for item in entry.iterdir():
            tar.add(item, arcname=item.name)
    workdir = tmp_path / "attempt"
    prepare_workdir(workdir)
    restore(archive, resume_dir(workdir))
    monkeypatch.setenv(sdk.ENV_RESUME_DIR, str(resume_dir(workdir)))
    ck = sdk.resume()
    assert ck is not None and (ck.step, ck.read_bytes()) == (7, b"state")


async def test_one_refused_for_good_is_dropped_not_sent_again(attempt) -> None:
    workdir, coord, shipper = attempt
    sdk.checkpoint(b"x" * 100, step=1)
    coord.refuse = TooLarge("larger than the limit of 64 bytes", field="body")
    assert await shipper.ship() == 0 and os.listdir(checkpoint_dir(workdir)) == []
    assert not shipper.stale  # the next one may fit
