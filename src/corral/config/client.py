"""The top-level settings, ``CORRAL_<KEY>`` or a top-level key of the config file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from corral.config.section import Section, section_config

__all__ = ["DEFAULT_URL", "CliSettings", "ClientSettings"]

DEFAULT_URL = "http://127.0.0.1:8001"


class ClientSettings(Section):
    """How a client reaches a coordinator: ``CORRAL_URL``, ``CORRAL_API_KEY``."""

    model_config = section_config("")

    url: str = Field(
        default=DEFAULT_URL, description="coordinator URL; several, comma-separated, fail over"
    )
    api_key: SecretStr | None = Field(default=None, description="sent as a Bearer token")
    token: SecretStr | None = Field(
        default=None, description="an API token (POST /api/auth/token): used instead of the key"
    )
    token_file: Path | None = Field(
        default=None, description="a file holding an API token, read at each client's start"
    )
    ca_file: Path | None = Field(
        default=None, description="trust only this CA for https:// coordinators (pki/ca.pem)"
    )
    ssl_no_verify: bool = Field(
        default=False, description="do not check the coordinator's certificate (development)"
    )


class CliSettings(ClientSettings):
    """The client's settings and the CLI's own (``CORRAL_LOG_LEVEL``)."""

    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="least severe log to show (`corral up`: warning)"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
