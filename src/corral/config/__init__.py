"""Corral's configuration, one scheme for every component.

Each section of settings is a pydantic-settings model built on ``Section``: a value comes
from a CLI flag, else ``CORRAL_<SECTION>__<KEY>`` (``CORRAL_<KEY>`` at the top level), else
a variable name of an earlier release (with a warning), else the TOML file (``--config`` or
``CORRAL_CONFIG``: top-level keys and ``[server]``, ``[worker]`` tables), else its default.
This package imports nothing else of Corral, so that every layer may build on it.
"""

from __future__ import annotations

from corral.config._file import (
    CONFIG_ENV,
    ROOT_KEYS,
    SECTIONS,
    ConfigError,
    config_file,
    use_file,
)
from corral.config._redact import REDACTED, redact
from corral.config._sources import Origin
from corral.config.client import DEFAULT_URL, ClientSettings, CliSettings
from corral.config.section import Key, Section, Setting, section_config

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_URL",
    "REDACTED",
    "ROOT_KEYS",
    "SECTIONS",
    "CliSettings",
    "ClientSettings",
    "ConfigError",
    "Key",
    "Origin",
    "Section",
    "Setting",
    "config_file",
    "redact",
    "section_config",
    "use_file",
]
