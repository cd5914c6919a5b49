"""A working directory packed for the trip (``corral submit --workdir``) and unpacked where an
attempt runs: what travels, what does not, and what is refused."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from corral.client._pack import pack, packed_files
from corral.model import InvalidInput
from corral.worker.packages import BadPackage, unpack


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _names(root: Path) -> list[str]:
    return [rel for rel, st in packed_files(root) if not Path(root, rel).is_dir()]


def test_what_git_ignores_and_corralignore_names_stay_behind(tmp_path: Path) -> None:
    root = _tree(tmp_path / "proj", {
        "train.py": "print(1)",
        ".gitignore": "*.log\nbuild/\n!keep.log\n",
        ".corralignore": "data/raw/\n",
        "run.log": "x", "keep.log": "kept", "build/out.bin": "x",
        "data/raw/huge.csv": "x", "data/small.csv": "a,b",
        "pkg/.gitignore": "*.tmp\n!pkg_keep.log\n", "pkg/mod.py": "", "pkg/a.tmp": "",
        "pkg/pkg_keep.log": "", "pkg/other.log": "",
        ".git/HEAD": "ref", "__pycache__/x.pyc": "", ".corral/output.log": "",
    })  # fmt: skip
    assert _names(root) == [
        ".corralignore", ".gitignore", "data/small.csv", "keep.log", "pkg/.gitignore",
        "pkg/mod.py", "pkg/pkg_keep.log", "train.py",
    ]  # fmt: skip


def test_the_same_files_pack_to_the_same_bytes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "proj", {"a.py": "print('a')", "sub/b.txt": "b"})
    one, two = pack(root), pack(root)
    try:
        assert one.digest == two.digest and one.files == 2
        (root / "a.py").write_text("print('changed')")
        three = pack(root)
        assert three.digest != one.digest
        three.path.unlink()
    finally:
        one.path.unlink()
        two.path.unlink()


def test_past_its_limit_it_says_what_is_largest(tmp_path: Path) -> None:
    root = _tree(tmp_path / "proj", {"train.py": "x", "weights/w.bin": "0" * 300_000})
    with pytest.raises(InvalidInput) as err:
        pack(root, max_bytes=100_000)
    assert err.value.field == "workdir"
    assert "weights/ (0.3 MiB)" in err.value.detail and ".corralignore" in err.value.detail
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob("corral-workdir-*x"))


def test_a_package_unpacks_with_modes_and_links_inside(tmp_path: Path) -> None:
    root = _tree(tmp_path / "proj", {"run.sh": "#!/bin/sh\necho hi\n", "lib/a.py": "A = 1"})
    (root / "run.sh").chmod(0o755)
    (root / "alias.py").symlink_to("lib/a.py")
    packed = pack(root)
    into = tmp_path / "attempt"
    into.mkdir()
    try:
        assert unpack(packed.path, into) == 2
    finally:
        packed.path.unlink()
    assert os.access(into / "run.sh", os.X_OK)
    assert (into / "alias.py").read_text() == "A = 1" and (into / "alias.py").is_symlink()


def _archive(tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize(
    "name", ["../escape.txt", "a/../../escape.txt", ".corral/result.json", "./.corral/exit_code"]
)
def test_a_package_that_reaches_outside_or_into_the_workers_files_is_refused(
    tmp_path: Path, name: str
) -> None:
    into = tmp_path / "attempt"
    into.mkdir()
    with pytest.raises(BadPackage):
        unpack(_archive(tmp_path, [(tarfile.TarInfo(name), b"x")]), into)
    assert not (tmp_path / "escape.txt").exists() and not (into / ".corral").exists()


def test_an_absolute_name_lands_inside(tmp_path: Path) -> None:
    into = tmp_path / "attempt"
    into.mkdir()
    unpack(_archive(tmp_path, [(tarfile.TarInfo("/etc/evil"), b"x")]), into)
    assert (into / "etc" / "evil").read_text() == "x"


def test_a_link_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("out")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    into = tmp_path / "attempt"
    into.mkdir()
    with pytest.raises(BadPackage):
        unpack(_archive(tmp_path, [(link, b"")]), into)


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("members", [
    [(_link("s", "."), b""), (tarfile.TarInfo("s/x"), b"through a link")],
    [(_link("d", "sub/../.."), b"")],
    [(_link("h", "/etc/passwd", tarfile.LNKTYPE), b"")],
    [(tarfile.TarInfo("a/../.corral/exit_code"), b"0")],
])  # fmt: skip
def test_links_and_names_that_tarfile_releases_let_through_are_refused(tmp_path, members):
    into = tmp_path / "attempt"
    into.mkdir()
    with pytest.raises(BadPackage):
        unpack(_archive(tmp_path, members), into)
    assert not (into / ".corral").exists() and not (into / "x").exists()


def test_a_checkpoint_unpacks_no_link_at_all(tmp_path):
    into = tmp_path / "resume"
    into.mkdir()
    with pytest.raises(BadPackage):
        unpack(_archive(tmp_path, [(_link("inside", "meta.json"), b"")]), into, allow_links=False)
