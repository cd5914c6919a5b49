"""An example task kind, ``shell``: ``corral submit --kind shell -- 'make data && make train'``.

The job's command is one script, run by bash with ``-euo pipefail`` (a failing step fails the
job, not only the last), in the job's directory. Its result counts the lines the script
printed and names the last one, read from the output the worker kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from corral.protocol import JobAssign
from corral.worker.kinds import Finished, LaunchSpec

__all__ = ["ShellKind"]


class ShellKind:
    name = "shell"

    def prepare(self, assign: JobAssign, workdir: Path) -> LaunchSpec:
        if len(assign.command) != 1:
            raise ValueError("a shell job's command is one script: quote it")
        argv = ["/bin/bash", "-euo", "pipefail", "-c", assign.command[0]]
        return LaunchSpec(argv=argv, cwd=workdir, env=dict(assign.env))

    def finish(self, exit_code: int, read: Callable[[str, int], bytes | None]) -> Finished:
        output = (read("output.log", 1024 * 1024) or b"").decode("utf-8", "replace")
        lines = output.splitlines()
        if exit_code != 0:
            return Finished(False, error=f"the script stopped at a failing step ({exit_code})")
        return Finished(True, result={"lines": len(lines), "last": lines[-1] if lines else None})
