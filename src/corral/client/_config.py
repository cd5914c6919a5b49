"""Where the client finds its coordinator and key when the caller names neither."""

from __future__ import annotations

import os

import httpx

from corral.model.errors import InvalidInput

DEFAULT_URL = "http://127.0.0.1:8001"


def from_env(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The given ``url`` and ``api_key``, else ``CORRAL_URL`` / ``CORRAL_API_KEY``, else
    the local default and no key. The one place the client reads its environment."""
    if url is None:
        url = os.environ.get("CORRAL_URL") or DEFAULT_URL
    if api_key is None:
        api_key = os.environ.get("CORRAL_API_KEY") or None
    return url, api_key


def check_urls(url: str) -> list[str]:
    """The coordinator URLs in ``url`` (comma-separated, tried in order); InvalidInput
    (field ``url``) for one that is not an http(s) URL with a host, rather than an error
    from deep in httpx at the first request."""
    urls = [u.strip() for u in url.split(",") if u.strip()]
    if not urls:
        raise InvalidInput("no coordinator URL given", field="url")
    for u in urls:
        try:
            parsed = httpx.URL(u)
            problem = None
            if parsed.scheme not in ("http", "https"):
                problem = "it is not an http:// or https:// URL"
            elif not parsed.host:
                problem = "it names no host"
            elif parsed.port is not None and not 0 < parsed.port < 65536:
                problem = f"port {parsed.port} is out of range"
        except httpx.InvalidURL as exc:
            problem = str(exc)
        if problem:
            raise InvalidInput(f"bad coordinator URL {u!r}: {problem}", field="url")
    return urls
