"""The TOML file: which one (``--config`` or ``CORRAL_CONFIG``), and its top-level shape.

The file mirrors the environment: top-level keys are the ``CORRAL_<KEY>`` settings, and a
``[server]`` or ``[worker]`` table holds the ``CORRAL_<SECTION>__<KEY>`` ones.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_ENV",
    "ROOT_KEYS",
    "SECTIONS",
    "ConfigError",
    "config_file",
    "read",
    "use_file",
]

CONFIG_ENV = "CORRAL_CONFIG"
SECTIONS = ("server", "worker")
# The top-level settings (ClientSettings, CliSettings); a test keeps this list in step.
ROOT_KEYS = ("url", "api_key", "token", "token_file", "ca_file", "ssl_no_verify", "log_level")

# Set by the CLI for one command (``corral --config FILE …``); else CORRAL_CONFIG is read.
_chosen: ContextVar[Path | None] = ContextVar("corral_config_file", default=None)


class ConfigError(Exception):
    """A setting that cannot be used; the message is one line that says where it came from."""


@contextmanager
def use_file(path: Path | None) -> Iterator[None]:
    """Settings built inside read ``path`` (``None``: only ``CORRAL_CONFIG``, if set)."""
    token = _chosen.set(path)
    try:
        yield
    finally:
        _chosen.reset(token)


def config_file() -> Path | None:
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    named = os.environ.get(CONFIG_ENV, "").strip()
    return Path(named).expanduser() if named else None


def read(path: Path) -> dict[str, Any]:
    """The file's contents, its top level checked; each section checks its own table."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML file: {exc}") from None
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {key} must be a table ([{key}])")
        elif key not in ROOT_KEYS:
            known = ", ".join([*ROOT_KEYS, *(f"[{s}]" for s in SECTIONS)])
            raise ConfigError(f"{path}: unknown key {key!r} (known at the top: {known})")
    return data
