"""The base of each group of settings: the server's, the worker's, the CLI's.

A section named ``server`` reads ``CORRAL_SERVER__<KEY>`` and the ``[server]`` table of the
config file; the top-level section (name ``""``) reads ``CORRAL_<KEY>`` and the file's
top-level keys. Priority: the values given to the constructor (the CLI's flags), then the
environment, then the deprecated names of the environment, then the file, then defaults.
Each value's origin is kept, for ``corral config show`` and for error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self, cast

from pydantic import Field, PrivateAttr, ValidationError, create_model
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from corral.config._file import ConfigError
from corral.config._redact import redact
from corral.config._sources import (
    DEFAULT,
    FLAG,
    DeprecatedEnvSource,
    FileSource,
    Origin,
    Recorded,
    recording,
)

__all__ = ["Key", "Section", "Setting", "section_config"]


def section_config(section: str) -> SettingsConfigDict:
    """The model_config of a section: its env prefix, and unknown keys refused."""
    prefix = f"CORRAL_{section.upper()}__" if section else "CORRAL_"
    return SettingsConfigDict(env_prefix=prefix, extra="forbid")


@dataclass(frozen=True)
class Key:
    """The names of one setting."""

    field: str  # the Python attribute
    key: str  # the TOML key, and the variable's suffix
    env: str  # the environment variable
    given_as: str  # the name pydantic validates it by: the alias, else the field


@dataclass(frozen=True)
class Setting:
    """One line of ``corral config show``: the value already redacted."""

    key: str
    env: str
    value: Any
    origin: Origin
    required: bool  # has no default: None here means not given yet


class Section(BaseSettings):
    """Subclasses set ``model_config = section_config(name)``. A field whose key differs
    from its Python name names its whole variable as ``validation_alias``, e.g.
    ``worker_token`` as ``CORRAL_WORKER__TOKEN``: its key is then ``token``. (Whole, as
    pydantic-settings reads an alias without the prefix unless ``env_prefix_target``,
    which older releases lack, says otherwise.)"""

    model_config = section_config("")

    # Environment variables of earlier releases: old name -> key.
    deprecated_env: ClassVar[Mapping[str, str]] = {}

    # The required fields that load(partial=True) let go unset.
    relaxed: ClassVar[frozenset[str]] = frozenset()

    _origins: dict[str, Origin] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        # A flag the CLI leaves unset arrives as None and must not hide the env var; a field
        # is given by its Python name.
        keys = type(self).setting_keys()
        given_as = {k.field: k.given_as for k in keys}
        given = {given_as.get(k, k): v for k, v in values.items() if v is not None}
        notes = recording.get()
        if notes is None:
            notes = {}
        token = recording.set(notes)
        try:
            super().__init__(**given)
        finally:
            recording.reset(token)
        self._origins = {k.field: notes.get(k.given_as, DEFAULT) for k in keys}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        prefix = cls.env_prefix()
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            whole = isinstance(alias, str) and alias.isupper() and alias.startswith(prefix)
            if alias is not None and not whole:
                raise TypeError(f"{cls.__name__}.{name}: its alias must be {prefix}<KEY>")

    @classmethod
    def env_prefix(cls) -> str:
        return cls.model_config.get("env_prefix") or "CORRAL_"

    @classmethod
    def section_name(cls) -> str:
        return cls.env_prefix().removeprefix("CORRAL_").removesuffix("__").lower()

    @classmethod
    def setting_keys(cls) -> list[Key]:
        prefix, out = cls.env_prefix(), []
        for name, field in cls.model_fields.items():
            alias = field.validation_alias if isinstance(field.validation_alias, str) else None
            key = alias.removeprefix(prefix).lower() if alias else name
            out.append(Key(name, key, f"{prefix}{key.upper()}", alias or name))
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        keys = cls.setting_keys()
        env = {k.given_as: k.env for k in keys}
        by_key = {k.key: k for k in keys}
        old = DeprecatedEnvSource(
            settings_cls,
            {
                name: (by_key[key].given_as, by_key[key].env)
                for name, key in cls.deprecated_env.items()
            },
        )
        file = FileSource(settings_cls, cls.section_name(), {k.key: k.given_as for k in keys})
        return (
            Recorded(init_settings, lambda given_as: FLAG),
            Recorded(env_settings, lambda given_as: Origin("env", env[given_as])),
            Recorded(old, old.origin),
            Recorded(file, file.origin),
        )

    @classmethod
    def load(
        cls,
        flags: Mapping[str, Any] | None = None,
        *,
        flag_names: Mapping[str, str] | None = None,
        partial: bool = False,
    ) -> Self:
        """Build from ``flags`` (field name -> value) and the other sources, or raise
        ConfigError with one line that names the value at fault and where it came from
        (``flag_names``: field name -> the flag that sets it, for that line). ``partial``:
        a required value may be missing (it is left None), to show what is set so far."""
        target = cls._partial() if partial else cls
        notes: dict[str, Origin] = {}
        token = recording.set(notes)
        try:
            return target(**(flags or {}))
        except ValidationError as exc:
            raise ConfigError(cls._explain(exc.errors()[0], notes, flag_names or {})) from None
        finally:
            recording.reset(token)

    @classmethod
    def _partial(cls) -> type[Self]:
        required: dict[str, Any] = {
            # validate_default: off, or the field's own checks would be handed the None.
            name: (
                cast(Any, field.annotation) | None,
                Field(None, validation_alias=field.validation_alias, validate_default=False),
            )
            for name, field in cls.model_fields.items()
            if field.is_required()
        }
        if not required:
            return cls
        partial = cast(type[Self], create_model(cls.__name__, __base__=cls, **required))
        partial.relaxed = frozenset(required)
        return partial

    @classmethod
    def _explain(
        cls, error: ErrorDetails, notes: Mapping[str, Origin], flag_names: Mapping[str, str]
    ) -> str:
        section = cls.section_name()
        if not error["loc"]:  # a check of the whole section
            return f"{section or 'settings'}: {error['msg'].removeprefix('Value error, ')}"
        given_as = str(error["loc"][0])
        k = next((k for k in cls.setting_keys() if k.given_as == given_as), None)
        if k is None:  # not a setting of this section
            return f"{section or 'settings'}: {given_as}: {error['msg']}"
        dotted = f"{section}.{k.key}" if section else k.key
        flag = flag_names.get(k.field)
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            table = f"under [{section}]" if section else "at the top"
            given = f"{flag}, " if flag else ""
            return f"{dotted} is not set: give {given}{k.env}, or {k.key} {table} in a config file"
        origin = notes.get(given_as, DEFAULT)
        if origin.kind == "env":
            return f"{origin.name}: {msg}"
        if origin.kind == "file":
            return f"{origin.name}: {f'[{section}] ' if section else ''}{k.key}: {msg}"
        return f"{flag or dotted}: {msg}"

    @property
    def origins(self) -> Mapping[str, Origin]:
        """Python field name -> where its value came from."""
        return self._origins

    def describe(self) -> list[Setting]:
        """Every setting, its value redacted, and its origin."""
        cls = type(self)
        return [
            Setting(
                key=k.key,
                env=k.env,
                value=redact(getattr(self, k.field)),
                origin=self._origins[k.field],
                required=k.field in cls.relaxed or cls.model_fields[k.field].is_required(),
            )
            for k in cls.setting_keys()
        ]
