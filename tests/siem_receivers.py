"""SIEM receivers for the sink tests: a syslog server on 127.0.0.1 (TCP or TLS) that parses RFC 6587
octet-counted frames strictly, and one that accepts connections and never reads.

The parser is the receiver's view of the stream: ``MSG-LEN SP SYSLOG-MSG`` with ``MSG-LEN`` a
non-zero decimal of at most 9 digits, then exactly that many bytes. Anything else is a framing
error, recorded and the connection closed, so a test sees a forged or split frame as an error or a
wrong message count, never silently.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from dataclasses import dataclass, field

__all__ = ["SyslogFrame", "SyslogReceiver", "parse_syslog"]

_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) - \xef\xbb\xbf")


@dataclass(frozen=True)
class SyslogFrame:
    """One received RFC 5424 message: PRI, the header fields and the MSG after the BOM."""

    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    msg: bytes


def parse_syslog(message: bytes) -> SyslogFrame:
    match = _HEADER.match(message)
    assert match is not None, f"not an RFC 5424 message with a BOM: {message[:120]!r}"
    pri, timestamp, hostname, app_name, procid, msgid = (g.decode("ascii") for g in match.groups())
    return SyslogFrame(int(pri), timestamp, hostname, app_name, procid, msgid, message[match.end():])


@dataclass
class SyslogReceiver:
    """A syslog receiver; ``start`` may be called again after ``stop`` (same port)."""

    ssl_context: ssl.SSLContext | None = None
    read: bool = True
    port: int = 0
    frames: list[SyslogFrame] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.ssl_context,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection (a receiver that went down)."""
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[SyslogFrame]:
        """Wait (bounded) until ``count`` frames arrived; the frames so far."""
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.frames

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        if not self.read:
            reader_transport: asyncio.ReadTransport = writer.transport  # type: ignore[assignment]
            reader_transport.pause_reading()  # accept and never read: the sender's buffers fill
            self._arrived.set()
            return
        try:
            while True:
                digits = await reader.readuntil(b" ")
                if not re.fullmatch(rb"[1-9][0-9]{0,8} ", digits):
                    self.errors.append(f"bad MSG-LEN {digits[:20]!r}")
                    break
                message = await reader.readexactly(int(digits[:-1]))
                self.frames.append(parse_syslog(message))
                self._arrived.set()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()

