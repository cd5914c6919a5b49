"""A real browser for the dashboard's and the worker page's tests: Playwright driving the
system's Chromium (Debian's ``chromium``; Playwright's own downloads are not used). Missing,
the tests are skipped, unless CORRAL_REQUIRE_BROWSER=1 (CI) makes that a failure."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def chromium_path() -> str | None:
    given = os.environ.get("CORRAL_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CORRAL_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium for the browser tests (apt-get install chromium)")
        pytest.skip("no Chromium (apt-get install chromium) or no playwright")
    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        b = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def shoot(page: Any, name: str) -> None:
    """A picture of the page for docs/screenshots (CORRAL_SCREENSHOTS=1), else for the log."""
    target = SHOTS if os.environ.get("CORRAL_SCREENSHOTS") == "1" else None
    if target is None:
        return
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"{name}.png"), full_page=True)
