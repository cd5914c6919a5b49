"""``corral artifacts ls|get JOB``: what a job's attempts stored (checkpoints, outputs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.cli import _output
from corral.cli._api import connect, run
from corral.cli._exit import Failure
from corral.cli._options import ApiKey, Json, Url
from corral.protocol import ArtifactList, ArtifactView

app = typer.Typer(help="What jobs stored: checkpoints and outputs.", no_args_is_help=True)


@app.command("ls")
def ls(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Json = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """List a job's artifacts, newest first."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            found = await client.artifacts(job_id)
        if as_json:
            _output.print_json(ArtifactList(artifacts=found))
            return
        rows = [(a.id, a.kind, a.name, "-" if a.step is None else a.step, a.attempt,
                 _output.size(a.size), _output.ago(a.created_at), a.digest[:12])
                for a in found]  # fmt: skip
        cols = ("ID", "KIND", "NAME", "STEP", "ATTEMPT", "SIZE", "STORED", "SHA-256")
        _output.out.print(_output.table(None, cols, rows))

    run(go())


def _pick(found: list[ArtifactView], which: str | None, job_id: str) -> ArtifactView:
    if not found:
        raise Failure(f"job {job_id} has stored nothing")
    if which is None:
        return found[0]
    chosen = [a for a in found if str(a.id) == which] or [a for a in found if a.name == which]
    if not chosen:
        names = ", ".join(sorted({a.name for a in found})[:10])
        raise Failure(f"job {job_id} has no artifact {which!r} (it has: {names})")
    return chosen[0]  # newest of that name


@app.command("get")
def get(
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    which: Annotated[
        str | None,
        typer.Argument(help="Artifact id or name (default: the newest).", show_default=False),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="File or directory to write to (default: .).", show_default=False
        ),
    ] = None,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Download an artifact; its SHA-256 is checked before the file takes its name."""

    async def go() -> None:
        async with connect(url, api_key) as client:
            art = _pick(await client.artifacts(job_id), which, job_id)
            dest = output or Path(".")
            if not dest.parent.is_dir():
                raise Failure(f"--output: no directory {dest.parent}")
            path = await client.download_artifact(job_id, art.id, dest)
        step = f" (step {art.step})" if art.step is not None else ""
        _output.err.print(f"{art.kind} {art.name}{step}, {_output.size(art.size)} -> {path}",
                          markup=False, soft_wrap=True)  # fmt: skip

    run(go())
