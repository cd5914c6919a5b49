"""Stdlib logging (uvicorn's loggers) goes through the same structlog pipeline as Corral's."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from corral.cli._logging import configure

pytestmark = pytest.mark.timeout(30)


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("uvicorn.error").setLevel(logging.NOTSET)


def test_uvicorn_lines_are_json_lines_when_not_a_terminal() -> None:
    stream = Stream(tty=False)
    configure("info", stream=stream)
    structlog.get_logger("corral.server").info("coordinator.started", port=1)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("uvicorn.error").info("Started server process [1]")  # chatter: hidden
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/healthz", "1.1", 200)
    docs = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(d["logger"], d["level"]) for d in docs] == [
        ("corral.server", "info"),
        ("uvicorn.error", "warning"),
        ("uvicorn.access", "info"),
    ]
    assert docs[1]["event"] == "Invalid HTTP request received."
    assert docs[2]["event"] == '127.0.0.1:5 - "GET /healthz HTTP/1.1" 200'
    assert all("timestamp" in d for d in docs)


def test_configuring_again_replaces_the_handler_and_honours_the_level() -> None:
    first, second = Stream(tty=False), Stream(tty=False)
    configure("info", stream=first)
    configure("error", stream=second)
    logging.getLogger("uvicorn.access").info("GET /")
    logging.getLogger("uvicorn.error").error("boom")
    assert first.getvalue() == ""
    assert [json.loads(line)["event"] for line in second.getvalue().splitlines()] == ["boom"]


def test_a_terminal_gets_readable_lines() -> None:
    stream = Stream(tty=True)
    configure("debug", stream=stream)
    logging.getLogger("uvicorn.error").debug("Started server process [1]")
    text = stream.getvalue()
    assert "Started server process [1]" in text and not text.lstrip().startswith("{")
