"""Values as they may be printed: secrets hidden, everything JSON-able."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import PurePath
from typing import Any

from pydantic import SecretBytes, SecretStr

__all__ = ["REDACTED", "redact"]

REDACTED = "<redacted>"
# The password of a URL such as postgresql://user:pw@host/db (a --db URL may hold one).
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/:@\s]*:)[^@/\s]+@")


def redact(value: Any) -> Any:
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}@", value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {str(k): redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    return value
