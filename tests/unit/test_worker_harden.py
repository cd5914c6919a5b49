"""Hardening the worker where the platform cannot: no prctl, no libc, and still no crash."""

from __future__ import annotations

import ctypes
import os

import pytest

from corral.config import harden as _harden

TOKEN = "wt_jobs_must_never_read_this"


def test_no_prctl_is_no_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_harden.sys, "platform", "darwin")
    assert _harden.make_undumpable() is False

    monkeypatch.setattr(_harden.sys, "platform", "linux")

    def no_libc(*_: object, **__: object) -> ctypes.CDLL:
        raise OSError("no libc here")

    monkeypatch.setattr(_harden.ctypes, "CDLL", no_libc)
    assert _harden.make_undumpable() is False
    monkeypatch.setenv("CORRAL_WORKER_TOKEN", TOKEN)
    _harden.forget_env("CORRAL_WORKER_TOKEN")
    assert "CORRAL_WORKER_TOKEN" not in os.environ
