"""The settings sources beyond pydantic-settings' own, and the record of which one gave
each value (what ``corral config show`` and error messages report)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource

from corral.config._file import SECTIONS, ConfigError, config_file, read

__all__ = ["DeprecatedEnvSource", "FileSource", "Origin", "Recorded", "recording"]


@dataclass(frozen=True)
class Origin:
    """Where a value came from: ``flag``, ``env NAME``, ``env OLD (deprecated)``,
    ``file PATH``, ``profile NAME`` (a worker's preset) or ``default``."""

    kind: Literal["flag", "env", "file", "profile", "default"]
    name: str | None = None  # the variable, or the file
    deprecated: bool = False

    def __str__(self) -> str:
        text = self.kind if self.name is None else f"{self.kind} {self.name}"
        return f"{text} (deprecated)" if self.deprecated else text


FLAG = Origin("flag")
DEFAULT = Origin("default")

# The name a value is taken by -> its Origin, for the settings being built in this context.
recording: ContextVar[dict[str, Origin] | None] = ContextVar("corral_origins", default=None)


class Recorded(PydanticBaseSettingsSource):
    """Another source, unchanged, that notes the origin of each key it supplies. Sources are
    called highest priority first, so the first note for a key is the one that counts."""

    def __init__(self, inner: PydanticBaseSettingsSource, origin: Callable[[str], Origin]):
        super().__init__(inner.settings_cls)
        self.inner = inner
        self.origin = origin

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self.inner()
        notes = recording.get()
        if notes is not None:
            for key in data:
                notes.setdefault(key, self.origin(key))
        return data


class FileSource(InitSettingsSource):
    """One table of the config file: ``[server]``, ``[worker]``, or the top-level keys.

    Not pydantic-settings' TomlConfigSettingsSource: that one skips a file that is missing
    and raises a bare KeyError for a table that is absent, where one file shared by all
    sections must be refused with its name and the key at fault, and may lack any table.
    """

    def __init__(self, settings_cls: type[BaseSettings], section: str, keys: Mapping[str, str]):
        # keys: TOML key -> the name the settings take it by
        self.path: Path | None = config_file()
        data = read(self.path) if self.path is not None else {}
        if section:
            table: dict[str, Any] = data.get(section, {})
            unknown = sorted(set(table) - set(keys))
            if unknown:
                raise ConfigError(
                    f"{self.path}: unknown key {unknown[0]!r} in [{section}]"
                    f" (known: {', '.join(keys)})"
                )
        else:  # the top level: the file's reader checked it; take the keys that are ours
            table = {k: v for k, v in data.items() if k in keys and k not in SECTIONS}
        super().__init__(settings_cls, {keys[k]: v for k, v in table.items()})

    def origin(self, key: str) -> Origin:
        return Origin("file", str(self.path))


class DeprecatedEnvSource(PydanticBaseSettingsSource):
    """The environment variables of earlier releases, below the current names. Each one
    found is reported on stderr, naming its replacement, once per settings built."""

    def __init__(self, settings_cls: type[BaseSettings], names: Mapping[str, tuple[str, str]]):
        # names: old variable -> (the name the settings take it by, the current variable)
        super().__init__(settings_cls)
        self.names = names
        self.found: dict[str, str] = {}  # the name it is taken by -> the old variable

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, "", False  # __call__ reads the variables itself

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for old, (given_as, new) in self.names.items():
            if old not in os.environ:
                continue
            note = f" ({new} is set and wins)" if new in os.environ else ""
            print(f"corral: warning: {old} is deprecated, use {new}{note}", file=sys.stderr)
            values[given_as] = os.environ[old]
            self.found[given_as] = old
        return values

    def origin(self, given_as: str) -> Origin:
        return Origin("env", self.found[given_as], deprecated=True)
