"""The client without a coordinator: where it finds one, and what it refuses up front."""

from __future__ import annotations

import pytest

from corral.client import AsyncClient, Client, InvalidInput
from corral.client._config import DEFAULT_URL, check_urls, from_env
from corral.client._stream import Lines


def test_url_and_key_fall_back_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_URL", raising=False)
    monkeypatch.delenv("CORRAL_API_KEY", raising=False)
    assert from_env(None, None) == (DEFAULT_URL, None)
    monkeypatch.setenv("CORRAL_URL", "http://c:1,http://d:2")
    monkeypatch.setenv("CORRAL_API_KEY", "ck_env")
    assert from_env(None, None) == ("http://c:1,http://d:2", "ck_env")
    assert from_env("http://given:3", "ck_given") == ("http://given:3", "ck_given")
    assert from_env(None, "") == ("http://c:1,http://d:2", "")  # "" is "no key", not "unset"


def test_several_urls_fail_over_in_order() -> None:
    assert check_urls(" http://a:1 , https://b ,") == ["http://a:1", "https://b"]


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "no coordinator URL"),
        (" , ", "no coordinator URL"),
        ("localhost:8001", "not an http"),
        ("ftp://x", "not an http"),
        ("http://", "no host"),
        ("http://127.0.0.1:99999", "99999"),
        ("http://[::1", "[::1"),
    ],
)
def test_a_bad_url_is_invalid_input_naming_url(url: str, says: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        AsyncClient(url)
    assert exc.value.field == "url" and says in str(exc.value)
    with pytest.raises(InvalidInput):
        Client(url)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"priority": 5000}, "priority"),
        ({"retries": -1}, "retries"),
        ({"timeout": 0}, "timeout"),
        ({"labels": {"": "x"}}, "labels"),
        ({"env": {"1BAD": "x"}}, "env"),
        ({"gpus": 999}, "gpus"),
        ({"name": ""}, "name"),
    ],
)
async def test_submit_refuses_a_bad_value_before_any_request(kw: dict, field: str) -> None:
    # Nothing listens on port 1: a request would be Unreachable, not InvalidInput.
    async with AsyncClient("http://127.0.0.1:1", attempts=1) as client:
        with pytest.raises(InvalidInput) as exc:
            await client.submit(["true"], **kw)
    assert exc.value.field == field and str(exc.value).startswith(f"{field}: ")


async def test_a_command_is_a_list_of_arguments() -> None:
    async with AsyncClient("http://127.0.0.1:1") as client:
        with pytest.raises(InvalidInput, match="list of arguments"):
            await client.submit("python train.py")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput) as exc:
            await client.submit([])
        assert exc.value.field == "command"
        with pytest.raises(InvalidInput) as exc:
            await client.create_worker("")
        assert exc.value.field == "name"


def test_lines_join_chunks_into_whole_lines() -> None:
    lines = Lines()
    assert lines.feed("ab") == []
    assert lines.feed("c\nde\nf") == ["abc", "de"]
    assert lines.feed("\n\n") == ["f", ""]
    assert lines.rest() == []
    assert lines.feed("tail") == [] and lines.rest() == ["tail"]


def test_the_blocking_client_reads_like_the_async_one() -> None:
    import inspect

    for name in ("submit", "jobs", "wait", "logs", "events", "worker_events", "remove_worker"):
        blocking, asynchronous = getattr(Client, name), getattr(AsyncClient, name)
        assert blocking.__doc__ == asynchronous.__doc__
        params = inspect.signature(blocking).parameters
        assert list(params) == list(inspect.signature(asynchronous).parameters)
    assert "Iterator[JobView]" in str(inspect.signature(Client.jobs).return_annotation)
    with Client("http://127.0.0.1:1") as client:
        assert client.url == "http://127.0.0.1:1"
    with pytest.raises(RuntimeError, match="closed"):
        client.healthy()
