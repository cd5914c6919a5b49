"""Where the client finds its coordinator and key when the caller names neither."""

from __future__ import annotations

from pathlib import Path

import httpx

from corral.config import DEFAULT_URL, ClientSettings, ConfigError
from corral.model.errors import InvalidInput

__all__ = ["DEFAULT_URL", "check_urls", "from_env", "tls_from_env"]


def from_env(
    url: str | None, api_key: str | None, token: str | None = None,
    token_file: str | Path | None = None,
) -> tuple[str, str | None]:  # fmt: skip
    """The coordinator's URL and the credential to send: the given ``url``; the given
    ``token``, else the content of ``token_file``, else ``api_key``. What is not given comes
    from the settings (``CORRAL_URL``; ``CORRAL_TOKEN``, ``CORRAL_TOKEN_FILE``,
    ``CORRAL_API_KEY``; then the config file ``CORRAL_CONFIG`` names), else the local default
    and no credential: the one configuration scheme, read in this one place. A token wins
    over a key wherever both are set."""
    given = token or (_read_token(token_file, "token_file") if token_file else None) or api_key
    if url is not None and given is not None:
        return url, given
    try:
        settings = ClientSettings.load()
    except ConfigError as exc:
        raise InvalidInput(str(exc), field="url" if url is None else "api_key") from exc
    if url is None:
        url = settings.url
    if given is None:
        if settings.token is not None:
            given = settings.token.get_secret_value()
        elif settings.token_file is not None:
            given = _read_token(settings.token_file, "CORRAL_TOKEN_FILE")
        elif settings.api_key is not None:
            given = settings.api_key.get_secret_value()
    return url, given


def tls_from_env(ca_file: str | Path | None, verify: bool | None) -> tuple[Path | None, bool]:
    """How an https:// coordinator's certificate is checked: the given ``ca_file`` and
    ``verify``, else ``CORRAL_CA_FILE`` and ``CORRAL_SSL_NO_VERIFY``, else the system's
    store."""
    if ca_file is not None and verify is not None:
        return Path(ca_file), verify
    try:
        settings = ClientSettings.load()
    except ConfigError as exc:
        raise InvalidInput(str(exc), field="ca_file") from exc
    path = Path(ca_file) if ca_file is not None else settings.ca_file
    if path is not None and not path.is_file():
        raise InvalidInput(f"ca_file: {path} is not a readable file", field="ca_file")
    return path, (not settings.ssl_no_verify) if verify is None else verify


def _read_token(path: str | Path, name: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{name}: cannot read {path}: {exc}", field="token_file") from None
    if not text or len(text) > 8192 or any(ch.isspace() for ch in text):
        raise InvalidInput(f"{name}: {path} does not hold one token", field="token_file")
    return text


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
