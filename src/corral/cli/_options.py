"""Options shared by every command that talks to a coordinator; each names its env var."""

from __future__ import annotations

from typing import Annotated

import typer

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="CORRAL_URL",
        show_envvar=True,
        show_default=False,
        help="Coordinator URL (default: http://127.0.0.1:8001); several, comma-separated,"
        " fail over in order.",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="CORRAL_API_KEY",
        show_envvar=True,
        show_default=False,
        help="API key (Bearer).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
