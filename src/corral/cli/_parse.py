"""Flag values that are more than a string: ``k=v`` pairs for labels, globs and env."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer

from corral.worker.config import parse_labels

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def pairs(values: Iterable[str], *, flag: str, what: str = "KEY=VALUE") -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; a malformed item is a usage error."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"expected {what}, got {item!r}", param_hint=flag)
        out[key] = value.strip()
    return out


def labels(text: str | None, *, flag: str = "--labels") -> dict[str, str]:
    """``"gpu=a100,zone=eu"`` -> dict, by the same rules a worker applies to its own."""
    try:
        return parse_labels(text or "")
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


def env(values: Iterable[str], *, flag: str = "--env") -> dict[str, str]:
    """``--env K=V`` pairs; K must be a shell variable name so the worker can export it."""
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not _ENV_NAME.match(key):
            raise typer.BadParameter(
                f"expected NAME=VALUE with NAME a variable name, got {item!r}", param_hint=flag
            )
        out[key] = value
    return out


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$")


def span(text: str, *, flag: str) -> int:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"3600s"`` (or ``"2w"``) -> seconds."""
    m = _SPAN.match(text)
    if not m:
        raise typer.BadParameter(
            f"expected a number and a unit (s, m, h, d or w), like 30d, got {text!r}",
            param_hint=flag,
        )
    return int(m.group(1)) * _UNITS[m.group(2)]


def config_file(path: Path, *, flag: str = "--config") -> dict[str, Any]:
    """A JSON object from a file (YAML, when PyYAML is installed and the name says so)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint=flag) from None
    if path.suffix in (".yaml", ".yml"):
        doc = _yaml(text, path, flag)
    else:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise typer.BadParameter(f"{path} is not JSON: {exc}", param_hint=flag) from None
    if not isinstance(doc, dict):
        raise typer.BadParameter(f"{path} must hold an object (name: value), not"
                                 f" {type(doc).__name__}", param_hint=flag)  # fmt: skip
    return doc


def _yaml(text: str, path: Path, flag: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise typer.BadParameter(f"{path} is YAML: pip install pyyaml, or give JSON",
                                 param_hint=flag) from None  # fmt: skip
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise typer.BadParameter(f"{path} is not YAML: {exc}", param_hint=flag) from None
