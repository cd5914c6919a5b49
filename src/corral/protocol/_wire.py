"""The base of every wire model, and what every store can hold."""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import chain
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

__all__ = ["MAX_NESTING", "Wire", "unstorable", "unstorable_text"]

# How deeply a value may nest lists and objects. Real payloads (a job's result, labels) stay
# a few levels deep; a cap well below Python's recursion limit (1000) keeps every later step
# (validation, storage, serialising a response) clear of RecursionError.
MAX_NESTING = 64
_END = object()


def unstorable_text(text: str) -> str | None:
    """Why ``text`` cannot be stored on every store (PostgreSQL refuses NUL), or None."""
    if "\x00" in text:
        return "text must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text must be valid Unicode (no lone surrogates)"
    return None


def unstorable(value: Any) -> str | None:
    """Why ``value`` cannot be stored as text/JSON on every store, or None."""
    # Walked with an explicit stack of iterators, not recursion: the stack's length is the
    # depth, and a body nested thousands deep costs one refusal instead of a RecursionError.
    stack: list[Iterator[Any]] = [iter((value,))]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, str):
            if why := unstorable_text(item):
                return why
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite (no NaN or Infinity)"
        elif isinstance(item, dict | list):
            if len(stack) > MAX_NESTING:
                return f"must not nest lists and objects more than {MAX_NESTING} deep"
            stack.append(
                chain.from_iterable(item.items()) if isinstance(item, dict) else iter(item)
            )
    return None


class Wire(BaseModel):
    # Unknown fields are refused so that a typo is a 422, not a silent default.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @field_validator("*")
    @classmethod
    def _storable_field(cls, value: Any) -> Any:
        # What PostgreSQL cannot store (NUL, lone surrogates, NaN in JSON) or what nests too
        # deeply is refused at the door, on every store alike, instead of failing in the
        # database; checked per field so that the 422 names the field. It runs after the
        # field's own validation, which goes only as deep as the field's type (``Any`` is taken
        # as is), because a before-validator is not allowed on the discriminator of Event.
        why = unstorable(value)
        if why:
            raise ValueError(why)
        return value
