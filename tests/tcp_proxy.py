"""A TCP forwarder a test can cut or hang: the way to take a database away from a gateway without stopping it.

The machine's PostgreSQL is shared and is never stopped. A gateway that reaches it through this
proxy sees a real outage when the test calls ``cut()``: the listener closes and every open
connection is reset, so new connects are refused. ``hang()`` is the nastier outage, a server that
accepts TCP and never answers (a blackhole: a hung database, a dead peer behind a live load
balancer): new connections are accepted and held, and nothing more is forwarded either way on the
open ones. ``restore()`` ends either: it listens on the same port again, or resets the connections
a hang held (their byte streams lost data) and forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._hung = False
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._hung:
            self._writers.add(writer)
            with contextlib.suppress(OSError):
                while await reader.read(65536):
                    pass  # swallowed: a blackhole reads and never answers
            self._writers.discard(writer)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self._hung:
                    continue  # dropped: the peer waits for an answer that never comes
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):  # before wait_closed, which may wait for these connections
            writer.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    def hang(self) -> None:
        """Accept and hold new connections, and forward nothing more on the open ones."""
        self._hung = True

    async def restore(self) -> None:
        """Forward again after ``cut()`` or ``hang()``."""
        if self._hung:
            self._hung = False
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()
        if self._server is None:
            await self.start()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.cut()
