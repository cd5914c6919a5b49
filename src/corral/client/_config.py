"""Where the client finds its coordinator and key when the caller names neither."""

from __future__ import annotations

import httpx

from corral.config import DEFAULT_URL, ClientSettings, ConfigError
from corral.model.errors import InvalidInput

__all__ = ["DEFAULT_URL", "check_urls", "from_env"]


def from_env(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The given ``url`` and ``api_key``, else the settings (``CORRAL_URL`` /
    ``CORRAL_API_KEY``, then the config file ``CORRAL_CONFIG`` names), else the local
    default and no key: the one configuration scheme, read in this one place."""
    if url is not None and api_key is not None:
        return url, api_key
    try:
        settings = ClientSettings.load()
    except ConfigError as exc:
        raise InvalidInput(str(exc), field="url" if url is None else "api_key") from exc
    if url is None:
        url = settings.url
    if api_key is None:
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
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
