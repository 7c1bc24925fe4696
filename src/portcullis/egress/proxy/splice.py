"""Copying a tunnel's bytes both ways, with bounded buffers, backpressure, and idle and total timeouts.

Why our own loop and not ``loop.sendfile`` or a bare ``read``/``write`` pair: a tunnel must end
when nothing has moved for ``idle_timeout_s`` (either way) or when it has lasted
``max_duration_s``, must count the bytes each way for the audit, and must never hold more than a
fixed amount for a peer that does not read. Each direction reads at most ``chunk`` bytes, writes
them and waits for the writer to drain below its high-water mark before reading again: a client
that never reads stops the copy from the upstream (its socket buffer fills, TCP pushes back on
the upstream) instead of growing memory. Per direction the gateway holds at most the stream
reader's buffer (its limit, twice at most, before asyncio pauses the socket) plus the writer's
high-water mark plus one chunk.

A half-close is passed on (``write_eof``) and the other direction goes on, as HTTP/1.1 clients
expect of a tunnel (RFC 9110 section 9.3.6: the tunnel closes when either side closes, after
what was sent is delivered). The tunnel ends when both directions are done, or on a timeout, an
error or ``cancel``; then both sockets are closed (aborted on a timeout: a peer that does not read
cannot hold a closing socket).

What it refuses to do: look at the bytes. It is TLS (or anything else) to the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

__all__ = ["SpliceLimits", "SpliceResult", "splice"]


@dataclass(frozen=True, slots=True)
class SpliceLimits:
    idle_timeout_s: float = 60.0
    max_duration_s: float = 3600.0
    chunk: int = 64 * 1024
    write_high_water: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class SpliceResult:
    """How a tunnel ended: ``closed`` (both sides done), ``idle_timeout``, ``max_duration``,
    ``client_gone`` / ``upstream_gone`` (a reset or error on that side), ``cancelled``."""

    bytes_up: int  # client → upstream
    bytes_down: int  # upstream → client
    ended: str


class _Tally:
    __slots__ = ("down", "last", "up")

    def __init__(self, now: float) -> None:
        self.up = 0
        self.down = 0
        self.last = now


async def splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    limits: SpliceLimits, *, first_up: bytes = b"",
) -> SpliceResult:
    """Copy until both directions end or a limit is hit; close both streams. ``first_up``: bytes the
    client sent after its ``CONNECT`` head, delivered before anything else."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tally = _Tally(started)
    for _, writer in (client, upstream):
        transport = writer.transport
        transport.set_write_buffer_limits(high=limits.write_high_water)
    ended = "closed"
    up: asyncio.Future[None] = asyncio.ensure_future(_pump(client[0], upstream[1], tally, True, limits.chunk, first_up))
    down: asyncio.Future[None] = asyncio.ensure_future(_pump(upstream[0], client[1], tally, False, limits.chunk))
    pumps: set[asyncio.Future[None]] = {up, down}
    try:
        while pumps:
            now = loop.time()
            deadline = min(tally.last + limits.idle_timeout_s, started + limits.max_duration_s)
            done, pumps = await asyncio.wait(pumps, timeout=max(0.0, deadline - now),
                                             return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failed = task.exception()
                if failed is not None and ended == "closed":
                    ended = "client_gone" if (task is up) == isinstance(failed, _ReadFailed) else "upstream_gone"
                    pumps = _cancel(pumps)
            if not done:
                now = loop.time()
                if now >= started + limits.max_duration_s:
                    ended = "max_duration"
                    pumps = _cancel(pumps)
                elif now >= tally.last + limits.idle_timeout_s:
                    ended = "idle_timeout"
                    pumps = _cancel(pumps)
    except asyncio.CancelledError:
        ended = "cancelled"
        _cancel(pumps)
        raise
    finally:
        for task in (up, down):
            if not task.done():
                task.cancel()
            with contextlib.suppress(BaseException):
                await task
        for _, writer in (client, upstream):
            if ended in ("closed", "client_gone", "upstream_gone"):
                writer.close()
            else:
                writer.transport.abort()
    return SpliceResult(tally.up, tally.down, ended)


def _cancel(pumps: set[asyncio.Future[None]]) -> set[asyncio.Future[None]]:
    for task in pumps:
        task.cancel()
    return set()


class _ReadFailed(Exception):
    """The side this pump reads from failed (reset); a write failure is the other side's."""


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tally: _Tally, up: bool, chunk: int,
                first: bytes = b"") -> None:
    loop = asyncio.get_running_loop()
    if first:
        writer.write(first)
        tally.up += len(first)
        await writer.drain()
    while True:
        try:
            data = await reader.read(chunk)
        except (ConnectionError, OSError) as exc:
            raise _ReadFailed() from exc
        if not data:
            if writer.can_write_eof() and not writer.is_closing():
                with contextlib.suppress(OSError, RuntimeError):
                    writer.write_eof()
            return
        tally.last = loop.time()
        if up:
            tally.up += len(data)
        else:
            tally.down += len(data)
        writer.write(data)
        await writer.drain()  # backpressure: read no more until the peer has taken this
        tally.last = loop.time()
