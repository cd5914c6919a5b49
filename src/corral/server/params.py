"""Path and query values that no store can hold are refused before any route sees them."""

from __future__ import annotations

from fastapi import Request

from corral.model import InvalidInput
from corral.protocol import unstorable_text


async def storable(request: Request) -> None:
    """An app-wide dependency, so that every route is covered by one check.

    A NUL in a job id (``/api/jobs/ab%00cd``) or a query value would otherwise reach
    PostgreSQL, which refuses it with a DataError: a 500 where SQLite answers 404.
    """
    for name, value in [*request.path_params.items(), *request.query_params.multi_items()]:
        if isinstance(value, str) and (why := unstorable_text(value)):
            raise InvalidInput(f"{name}: {why}", field=name)
