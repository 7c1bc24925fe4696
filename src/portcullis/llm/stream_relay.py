"""A streamed LLM answer relayed chunk by chunk: bounded in bytes and time, usage read on the way,
and its end reported exactly once, however it ends.

Why: a streamed answer cannot be buffered (the caller wants tokens as they are generated, and a
long answer would sit in the gateway's memory), yet its budget can only be settled when it ends.
``LlmStream`` wraps the provider's chunk iterator: each chunk is counted against
``max_bytes``, fed to a ``StreamUsageTracker`` and handed on unchanged; the whole relay must end
within ``max_duration_s`` (a stalled provider cannot hold a reservation and a connection
forever). Its ``on_end`` callback runs once with a ``StreamEnd``: how it ended, the bytes relayed,
and the usage the stream reported (None: unknown, so the whole reservation is charged).

Ends: ``complete`` (the provider finished), ``too_large`` / ``too_long`` (cut by a limit: the
next ``__anext__`` raises ``StreamCut``, so a door aborts the response instead of ending it
cleanly and the client can tell it is incomplete), ``upstream_error`` (the provider's connection
failed: the error is re-raised after ``on_end``), ``closed`` (the door stopped reading: the client
went away). A door must call ``aclose()`` in a ``finally``; ``on_end`` errors are the door's.

What it refuses to do: change a byte of the answer, or read the time itself (a ``Clock`` is given).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from portcullis.clock import Clock
from portcullis.llm.stream_usage import StreamUsage, StreamUsageTracker
from portcullis.llm.usage import Provider

__all__ = ["LlmStream", "StreamCut", "StreamEnd", "StreamEndReason"]

StreamEndReason = Literal["complete", "too_large", "too_long", "upstream_error", "closed"]


class StreamCut(Exception):
    """The relay cut the stream at a limit; the response must be aborted, not ended cleanly."""

    def __init__(self, reason: StreamEndReason) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """How a relayed stream ended."""

    reason: StreamEndReason
    bytes: int
    usage: StreamUsage


class LlmStream:
    """Iterate it like the chunk iterator it wraps; ``aclose()`` when done."""

    def __init__(self, chunks: AsyncIterator[bytes], *, provider: Provider, max_bytes: int, max_duration_s: float,
                 clock: Clock, on_end: Callable[[StreamEnd], Awaitable[None]], max_event_chars: int = 1 << 20) -> None:
        self._chunks = chunks
        self._tracker = StreamUsageTracker(provider, max_event_chars=max_event_chars)
        self._max_bytes = max_bytes
        self._deadline = clock.monotonic() + max_duration_s
        self._clock = clock
        self._on_end = on_end
        self._bytes = 0
        self._ended: StreamEndReason | None = None

    @property
    def ended(self) -> StreamEndReason | None:
        return self._ended

    def __aiter__(self) -> LlmStream:
        return self

    async def __anext__(self) -> bytes:
        if self._ended is not None:
            if self._ended in ("too_large", "too_long"):
                raise StreamCut(self._ended)
            raise StopAsyncIteration
        remaining = self._deadline - self._clock.monotonic()
        if remaining <= 0:
            await self._end("too_long")
            raise StreamCut("too_long")
        try:
            async with asyncio.timeout(remaining):
                chunk = await anext(self._chunks)
        except StopAsyncIteration:
            await self._end("complete")
            raise
        except TimeoutError:
            await self._end("too_long")
            raise StreamCut("too_long") from None
        except asyncio.CancelledError:
            await self._end("closed")
            raise
        except BaseException:
            await self._end("upstream_error")
            raise
        if self._bytes + len(chunk) > self._max_bytes:
            await self._end("too_large")
            raise StreamCut("too_large")
        self._bytes += len(chunk)
        self._tracker.feed(chunk)
        return chunk

    async def aclose(self) -> None:
        """End the relay (``closed`` unless it already ended) and close the provider's iterator."""
        try:
            if self._ended is None:
                await self._end("closed")
        finally:
            close = getattr(self._chunks, "aclose", None)
            if close is not None:
                await close()

    async def _end(self, reason: StreamEndReason) -> None:
        if self._ended is not None:
            return
        self._ended = reason
        await self._on_end(StreamEnd(reason, self._bytes, self._tracker.result()))
