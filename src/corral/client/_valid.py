"""Arguments checked on the client, before any request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from corral.model import InvalidInput, NotFound

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def valid(model: type[M], fields: dict[str, Any], keyword: Mapping[str, str] | None = None) -> M:
    """Checked here, before any request, so a bad value is an InvalidInput that names the
    keyword to fix, even with no coordinator running."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        wire = str(first["loc"][0]) if first["loc"] else ""
        name = (keyword or {}).get(wire, wire)
        raise InvalidInput(f"{name}: {first['msg']}", field=name) from None


def by_ref(listing: Sequence[T], ref: str, what: str) -> T:
    """The item of ``listing`` whose id is ``ref``, else the one whose name is."""
    for key in ("id", "name"):
        for item in listing:
            if getattr(item, key) == ref:
                return item
    raise NotFound(f"no {what} with id or name {ref!r}")
