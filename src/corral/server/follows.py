"""How many long-lived answers (followed logs and histories, long polls) one API key holds
open at once on this coordinator: past ``follow_streams_per_key`` a new one is answered 429,
so that one key cannot hold every connection and task the coordinator has."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from typing import TypeVar

from corral.model import TooManyRequests

T = TypeVar("T")


class Follows:
    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: Counter[str] = Counter()

    def take(self, key_id: str) -> None:
        if self._open[key_id] >= self.per_key:
            raise TooManyRequests(
                f"this key holds {self.per_key} followed streams or long polls open already:"
                " close one first", retry_after_s=5,
            )  # fmt: skip
        self._open[key_id] += 1

    def give(self, key_id: str) -> None:
        self._open[key_id] -= 1
        if self._open[key_id] <= 0:
            del self._open[key_id]

    def open_for(self, key_id: str) -> int:
        return self._open[key_id]

    def held(self, key_id: str, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """``stream``, holding one of the key's places until it ends, is closed, or is
        dropped unstarted (a client gone before its first byte)."""
        return _Held(self, key_id, stream)


class _Held(AsyncIterator[T]):
    # A class, not an async generator: a generator never started never runs its finally,
    # and a client that leaves before the first byte would keep its place for ever.
    def __init__(self, follows: Follows, key_id: str, stream: AsyncIterator[T]) -> None:
        self._follows, self._key, self._stream = follows, key_id, stream
        self._held = True

    def __aiter__(self) -> _Held[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await anext(self._stream)
        except BaseException:
            self._release()
            raise

    async def aclose(self) -> None:
        self._release()
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._follows.give(self._key)

    def __del__(self) -> None:
        self._release()
