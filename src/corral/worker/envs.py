"""Python environments for jobs that name their requirements (``corral submit --requirements
requirements.txt``, ``--pip 'pkg==1.2'``).

An environment is a virtual environment in ``<work_dir>/envs/<key>``, where the key hashes
the requirements' lines and the worker's interpreter: the second job with the same lines
starts at once, and jobs that need it at the same moment build it once (a lock per key). It
sees the worker's own packages (corral, and whatever the machine was set up with, a CUDA
build of torch above all) below what it installs. uv builds it when
the worker's PATH has ``uv``, else ``venv`` and pip. It is built where it stays and
marked ready once whole, so a worker killed mid-build leaves nothing that looks ready.

An install that fails fails the attempt with the installer's own words: the requirements
are the job's, not a fault of the worker, so it is not run again elsewhere.

A worker that runs each attempt as a user of its own (``--run-as-users``, as root) builds no
environment: the installer would run the job's requirements (a package's build, a ``-r``
of any file, an index of its choosing) as root, outside the isolation. Such a job fails,
saying so; give those workers their packages when they are set up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import site
import sys
import time
from pathlib import Path

__all__ = ["EnvFailed", "Envs", "env_key"]

_ERROR_TAIL = 4000  # characters of the installer's output in the attempt's error
READY = ".corral-ready"  # written last: the environment is whole


class EnvFailed(Exception):
    """The installer could not build the environment; its output's tail is the message."""


def env_key(requirements: list[str]) -> str:
    interpreter = f"{sys.executable} {sys.version}"
    doc = json.dumps({"python": interpreter, "requirements": requirements})
    return hashlib.sha256(doc.encode()).hexdigest()[:24]


def _python(env: Path) -> Path:
    return env / "bin" / "python"


class Envs:
    def __init__(self, root: Path, *, timeout_s: float = 1800.0) -> None:
        self.root = root
        self.timeout_s = timeout_s
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, requirements: list[str]) -> tuple[Path, bool]:
        """The environment's directory, built now if there is none: (it, whether it was)."""
        key = env_key(requirements)
        env = self.root / key
        ready = env / READY
        async with self._locks.setdefault(key, asyncio.Lock()):
            if await asyncio.to_thread(ready.exists):
                return env, False
            # Built where it stays (its scripts' shebangs name this path), and ready only
            # once the mark is written: what a killed build left is started again.
            await asyncio.to_thread(shutil.rmtree, env, True)
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            try:
                await self._build(env, requirements)
                await asyncio.to_thread(ready.write_text, "\n".join(requirements) + "\n")
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, env, True)
                raise
            return env, True

    async def _build(self, env: Path, requirements: list[str]) -> None:
        lines = env.parent / f"{env.name}.txt"
        await asyncio.to_thread(lines.write_text, "\n".join(requirements) + "\n")
        try:
            uv = shutil.which("uv")
            if uv is not None:
                await self._run([uv, "venv", "--quiet", "--system-site-packages", "--python",
                                 sys.executable, str(env)])  # fmt: skip
                await self._run([uv, "pip", "install", "--python", str(_python(env)),
                                 "-r", str(lines)])  # fmt: skip
            else:
                await self._run([sys.executable, "-m", "venv", "--system-site-packages",
                                 str(env)])  # fmt: skip
                await self._run([str(_python(env)), "-m", "pip", "install",
                                 "--disable-pip-version-check", "--no-input", "-r",
                                 str(lines)])  # fmt: skip
        finally:
            await asyncio.to_thread(lines.unlink, missing_ok=True)
        await asyncio.to_thread(_see_the_workers_packages, env)

    async def _run(self, argv: list[str]) -> None:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PIP_NO_INPUT": "1"},
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise EnvFailed(
                f"{Path(argv[0]).name} did not finish within {self.timeout_s:g}s"
            ) from None
        if proc.returncode != 0:
            text = out.decode("utf-8", "replace").strip()
            what = " ".join([Path(argv[0]).name, *argv[1:3]])
            took = time.monotonic() - started
            raise EnvFailed(f"{what} … exited with {proc.returncode} after {took:.1f}s:\n"
                            f"{text[-_ERROR_TAIL:]}")  # fmt: skip


def _see_the_workers_packages(env: Path) -> None:
    """The worker's own site-packages, after the environment's own: ``--system-site-packages``
    reaches the base interpreter's, not those of a virtual environment the worker runs in
    (where corral itself is)."""
    (site_dir,) = (env / "lib").glob("python*/site-packages")
    own = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # addsitedir, not a bare path: their own .pth files (an editable install's) count too.
    (site_dir / "_corral_worker.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in own)
    )
