"""The coordinator's SQLite connection, called on the event loop's own thread.

SQLAlchemy's asyncio engine talks to SQLite through aiosqlite, which hands every call (each
statement, each fetch, the commit) to a thread of its own and back through
``call_soon_threadsafe``. A profile of ``corral bench calls`` put 17 % of the
coordinator's CPU in that hand-off, and on a loaded machine each one waits for the loop to
be scheduled again (docs/PERFORMANCE.md). A statement on a local SQLite file takes
microseconds, so this module gives SQLAlchemy's aiosqlite dialect a connection with the same
awaitable surface that runs each call at once, where it is awaited.

Nothing here may block the loop for long, and two things could:

- a WAL checkpoint (it copies the log into the database and syncs both): automatic
  checkpoints are off on this connection, and ``Checkpointer`` runs them on a thread of its
  own with a connection of its own (a passive checkpoint never waits for the writer);
- a lock held by another process: the coordinator is the only writer of its SQLite file
  (several coordinators need PostgreSQL), so only a tool opened on the file by hand could.

Written here rather than taken from a library because none does this: aiosqlite and
SQLAlchemy's own adapters both run the driver on a thread."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

CHECKPOINT_EVERY_S = 1.0


class Cursor:
    """An ``aiosqlite.Cursor``'s surface over a ``sqlite3.Cursor``, each call made at once."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> Cursor:
        self._cursor.execute(sql, () if parameters is None else parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class Connection:
    """An ``aiosqlite.Connection``'s surface (what SQLAlchemy's aiosqlite dialect uses) over a
    ``sqlite3.Connection`` used on the calling thread. Not its isolation-level setter, which
    reaches into aiosqlite's thread queue: the store's engine sets no isolation level."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._connection: sqlite3.Connection | None = conn

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("Connection closed")
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> Cursor:
        return Cursor(self._conn.cursor())

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def connector(path: str) -> Callable[[], Any]:
    """``create_async_engine``'s ``async_creator`` for the database file at ``path`` (the
    engine's ``connect`` listeners then set its pragmas)."""

    async def connect() -> Connection:
        conn = sqlite3.connect(path, check_same_thread=False)
        # Checkpoints are taken by the Checkpointer's thread, never on the loop's.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        return Connection(conn)

    return connect


class Checkpointer:
    """Copies the write-ahead log into the database every second, on a thread of its own.

    Passive: it never waits for the writer nor holds it up; the log restarts from its
    beginning at the next write after a checkpoint that reached its end. A failed
    checkpoint (the disk full) is tried again the next second; SQLite itself checkpoints
    whatever is left when the last connection closes."""

    def __init__(self, path: str, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self._path = path
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="corral-sqlite-checkpoint",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self._every_s):
                try:
                    if conn is None:
                        conn = sqlite3.connect(self._path)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # the next second tries again; nothing is lost meanwhile
        finally:
            if conn is not None:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
