"""A TCP proxy on loopback that can cut the link, for tests that need a real partition."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any


class FaultProxy:
    """Forwards 127.0.0.1:<port> to a target. ``cut()`` drops every open connection and
    closes new ones at once (the worker sees a dead network); ``restore()`` heals it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._cut = False
        self._hole = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="fault-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self._do_cut)

    def blackhole(self) -> None:
        """Keep every connection open but pass nothing either way, as a link whose packets
        are dropped does: no error, just silence."""
        self._loop.call_soon_threadsafe(setattr, self, "_hole", True)

    def restore(self) -> None:
        self._loop.call_soon_threadsafe(self._heal)

    def _heal(self) -> None:
        self._cut = self._hole = False

    def retarget(self, host: str, port: int) -> None:
        self.target = (host, port)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        self._thread.join(10)

    def _do_cut(self) -> None:
        self._cut = True
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        """Cut, then end every connection's task before the loop stops, so none is left
        pending when the loop closes."""
        self._do_cut()
        self._server.close()
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop.stop()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        while self._hole:  # accepted, then silence: what reaches us is dropped
            if not await reader.read(65536):
                return
        try:
            up_r, up_w = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_w))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if self._cut:
                        break
                    if self._hole:
                        continue  # dropped on the floor
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort() if self._cut else dst.close()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self._writers.discard(writer)
        self._writers.discard(up_w)
