"""The embedded store runs SQLite on the event loop's thread, and its write-ahead log is
checkpointed by a thread of its own, never by a commit on the loop."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time

from sqlalchemy import text

from corral.store import Store


def _store(tmp_path) -> tuple[Store, str]:
    path = str(tmp_path / "corral.db")
    return Store(f"sqlite:///{path}"), path


def test_statements_run_on_the_loop_thread(tmp_path):
    async def main() -> tuple[int, int, int]:
        store, _ = _store(tmp_path)
        try:
            async with store.tx() as conn:
                raw = await conn.get_raw_connection()
                # SQLite calls a registered function on the thread that runs the statement.
                raw.driver_connection._conn.create_function("tid", 0, threading.get_ident)
                ran_on = (await conn.execute(text("SELECT tid()"))).scalar_one()
                auto = (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
            return ran_on, threading.get_ident(), auto
        finally:
            await store.close()

    ran_on, loop_thread, auto = asyncio.run(main())
    assert ran_on == loop_thread
    assert auto == 0  # the loop never checkpoints


def _grown(path: str, past: int, within_s: float = 10) -> int:
    deadline = time.monotonic() + within_s
    while os.path.getsize(path) <= past and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.path.getsize(path)


def test_the_checkpointer_copies_the_log_into_the_database(tmp_path):
    async def main() -> tuple[int, int]:
        store, path = _store(tmp_path)
        try:
            async with store.tx() as conn:
                await conn.execute(text("CREATE TABLE t (x BLOB)"))
            before = await asyncio.to_thread(os.path.getsize, path)
            for _ in range(20):  # about 2 MB: less than SQLite's own checkpoints wait for
                async with store.tx() as conn:
                    await conn.execute(text("INSERT INTO t VALUES (randomblob(100000))"))
            # While the store is open: its close would checkpoint what is left anyway.
            return before, await asyncio.to_thread(_grown, path, before + 1_000_000)
        finally:
            await store.close()

    before, after = asyncio.run(main())
    assert after > before + 1_000_000, (before, after)  # the rows left the log for the file
    with sqlite3.connect(tmp_path / "corral.db") as db:
        assert db.execute("SELECT count(*) FROM t").fetchone() == (20,)


def test_an_error_in_a_statement_is_sqlites_own(tmp_path):
    async def main() -> None:
        store, _ = _store(tmp_path)
        try:
            async with store.tx() as conn:
                await conn.execute(text("CREATE TABLE u (x INTEGER PRIMARY KEY)"))
                await conn.execute(text("INSERT INTO u VALUES (1)"))
            try:
                async with store.tx() as conn:
                    await conn.execute(text("INSERT INTO u VALUES (2)"))
                    await conn.execute(text("INSERT INTO u VALUES (1)"))
            except Exception as exc:  # rolled back whole: neither row of the second landed
                assert "UNIQUE" in str(exc)
            else:
                raise AssertionError("a duplicate key was accepted")
            async with store.tx() as conn:
                rows = (await conn.execute(text("SELECT x FROM u"))).scalars().all()
            assert rows == [1]
        finally:
            await store.close()

    asyncio.run(main())
