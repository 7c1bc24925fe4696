"""``RecordingUpstream``: a raw HTTP/1.1 backend on 127.0.0.1 that records each request head on arrival.

Why raw asyncio rather than an HTTP framework: a framework hands a handler the request only after it
has read the whole body, so a head the gateway forwarded before a body it then refused would never
be seen, and "nothing reached the upstream" would be an untested claim. Here a head is recorded the
moment its blank line arrives; the body is read afterwards (``Content-Length`` or chunked), its
bytes recorded as they arrive (``received``), and only then is the request answered. How each
request ended is recorded too (``outcomes``: ``complete``, or ``cut`` when the connection ended
before the body its framing announced), and ``wait_for`` lets a test wait for any of it without
sleeping: a streamed body's first bytes, or the moment the gateway abandoned a request.

What it refuses to do: be a general server. It answers every complete request with one fixed
``200`` JSON reply, and it does not check framing beyond what it needs to find the body's end (the
gateway's own tests decide what is well framed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

__all__ = ["RecordedHead", "RecordingUpstream"]

_REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


@dataclass(frozen=True, slots=True)
class RecordedHead:
    """One request head as the backend received it (names lower-cased, values as sent)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first value of ``name``, or ``None``."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class RecordingUpstream:
    """Start with ``async with RecordingUpstream() as up:``; point a route at ``up.url``."""

    heads: list[RecordedHead] = field(default_factory=list)  # on arrival, before the body is read
    bodies: list[bytes] = field(default_factory=list)  # whole bodies of the requests answered
    received: list[bytearray] = field(default_factory=list)  # per head: body bytes so far (no chunk framing)
    outcomes: list[str] = field(default_factory=list)  # per head, once it ended: "complete" or "cut"
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, condition: Callable[[RecordingUpstream], bool]) -> None:
        """Return once ``condition(self)`` holds; it is checked whenever something arrives."""
        async with self._changed:
            await self._changed.wait_for(lambda: condition(self))

    async def _note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RecordingUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        open_request = False
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                head = _parse_head(raw)
                self.heads.append(head)
                sink = bytearray()
                self.received.append(sink)
                open_request = True
                await self._note()
                self.bodies.append(await self._read_body(reader, head, sink))
                self.outcomes.append("complete")
                open_request = False
                await self._note()
                writer.write(_REPLY)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass  # the gateway closed, cut a body, or sent something this backend cannot frame
        finally:
            if open_request:
                self.outcomes.append("cut")
                await self._note()
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_body(self, reader: asyncio.StreamReader, head: RecordedHead, sink: bytearray) -> bytes:
        length = head.header("content-length")
        if length is not None:
            await self._read_into(reader, int(length), sink)
            return bytes(sink)
        if (head.header("transfer-encoding") or "").lower() != "chunked":
            return b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, then the blank line
                    pass
                return bytes(sink)
            await self._read_into(reader, size, sink)
            await reader.readexactly(2)

    async def _read_into(self, reader: asyncio.StreamReader, size: int, sink: bytearray) -> None:
        """Read ``size`` bytes into ``sink`` as they come (a waiting test sees each piece)."""
        while size > 0:
            data = await reader.read(min(size, 65536))
            if not data:
                raise asyncio.IncompleteReadError(bytes(sink), size)
            sink += data
            size -= len(data)
            await self._note()


def _parse_head(raw: bytes) -> RecordedHead:
    lines = raw.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    target = rest.rpartition(" ")[0]
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
    return RecordedHead(method, target, tuple(headers))
