"""``corral config show``: every setting of the CLI, the coordinator and the worker, its
value and where it came from; secrets redacted."""

from __future__ import annotations

import json
from typing import Any

import typer

from corral.cli import _output
from corral.cli._options import Json
from corral.config import CliSettings, Section, Setting, config_file

app = typer.Typer(
    help="The effective configuration (flag > env var > config file > default).",
    no_args_is_help=True,
)


@app.command("show")
def show(as_json: Json = False) -> None:
    """Print each setting as a line of the config file would give it, and where it came
    from: env NAME, file PATH or default. A required value not given shows as unset."""
    from corral.server.config import ServerSettings
    from corral.worker.config import WorkerSettings

    sections: dict[str, Section] = {
        "cli": CliSettings.load(),
        "server": ServerSettings.load(),
        "worker": WorkerSettings.load(partial=True),  # a worker's URL and token may be unset
    }
    path = config_file()
    if as_json:
        _output.print_json(
            {
                "file": str(path) if path is not None else None,
                **{name: _as_dict(s.describe()) for name, s in sections.items()},
            }
        )
        return
    lines = [f"# config file: {path if path is not None else 'none (--config, CORRAL_CONFIG)'}"]
    for name, settings in sections.items():
        lines += ["", f"[{name}]" if name != "cli" else "# top level: the CLI and clients"]
        rows = [(s.key, _toml(s.value), _source(s)) for s in settings.describe()]
        width = max(len(f"{k} = {v}") for k, v, _ in rows)
        lines += [f"{f'{k} = {v}':<{width}}  # {origin}" for k, v, origin in rows]
    _output.out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def _source(s: Setting) -> str:
    return "required, not given" if s.value is None and s.required else str(s.origin)


def _as_dict(settings: list[Setting]) -> dict[str, Any]:
    return {
        s.key: {"value": s.value, "source": str(s.origin), "env": s.env, "required": s.required}
        for s in settings
    }


def _toml(value: Any) -> str:
    """A value as TOML writes it; ``unset`` for None (TOML has no null)."""
    if value is None:
        return "unset"
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)
