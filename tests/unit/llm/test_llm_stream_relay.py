"""LlmStream: chunks relayed unchanged, cut at the byte and time limits, the end reported once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tests.unit.llm.test_llm_stream_usage import OPENAI_CHAT

from portcullis.llm.stream_relay import LlmStream, StreamCut, StreamEnd
from portcullis.llm.usage import TokenUsage
from portcullis.testing import ManualClock


class Ends:
    def __init__(self) -> None:
        self.seen: list[StreamEnd] = []

    async def __call__(self, end: StreamEnd) -> None:
        self.seen.append(end)


async def chunks_of(data: bytes, size: int, clock: ManualClock | None = None, step: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        if clock is not None:
            clock.advance(step)
        yield data[i:i + size]


def relay(source: AsyncIterator[bytes], ends: Ends, clock: ManualClock, *, max_bytes: int = 1 << 20,
          max_duration_s: float = 60.0) -> LlmStream:
    return LlmStream(source, provider="openai", max_bytes=max_bytes, max_duration_s=max_duration_s, clock=clock,
                     on_end=ends)


async def test_a_whole_stream_passes_unchanged_and_reports_its_usage_once() -> None:
    clock, ends = ManualClock(), Ends()
    stream = relay(chunks_of(OPENAI_CHAT, 17), ends, clock)
    out = b"".join([chunk async for chunk in stream])
    await stream.aclose()
    assert out == OPENAI_CHAT
    [end] = ends.seen
    assert (end.reason, end.bytes, end.usage.usage) == ("complete", len(OPENAI_CHAT), TokenUsage(11, 2))


async def test_a_stream_past_its_byte_limit_is_cut_and_its_usage_is_unknown() -> None:
    clock, ends = ManualClock(), Ends()
    stream = relay(chunks_of(OPENAI_CHAT, 10), ends, clock, max_bytes=95)
    out: list[bytes] = []

    async def read_all() -> None:
        async for chunk in stream:
            out.append(chunk)

    with pytest.raises(StreamCut) as cut:
        await read_all()
    await stream.aclose()
    assert cut.value.reason == "too_large" and len(b"".join(out)) == 90
    [end] = ends.seen
    assert (end.reason, end.bytes, end.usage.usage) == ("too_large", 90, None)


async def test_a_stream_past_its_duration_is_cut() -> None:
    clock, ends = ManualClock(), Ends()
    stream = relay(chunks_of(OPENAI_CHAT, 10, clock, step=1.0), ends, clock, max_duration_s=5.5)
    with pytest.raises(StreamCut):
        async for _ in stream:
            pass
    await stream.aclose()
    assert [e.reason for e in ends.seen] == ["too_long"]


async def test_a_provider_that_stalls_is_cut_at_the_deadline() -> None:
    stalled = asyncio.Event()

    async def stall() -> AsyncIterator[bytes]:
        yield b"data: {}\n\n"
        await stalled.wait()  # never set: the provider sends nothing more
        yield b""

    clock, ends = ManualClock(), Ends()
    stream = relay(stall(), ends, clock, max_duration_s=0.05)
    assert await anext(stream) == b"data: {}\n\n"
    with pytest.raises(StreamCut):
        await anext(stream)
    await stream.aclose()
    assert [e.reason for e in ends.seen] == ["too_long"]


async def test_a_broken_provider_connection_ends_the_relay_and_is_raised() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield OPENAI_CHAT[:40]
        raise ConnectionResetError

    clock, ends = ManualClock(), Ends()
    stream = relay(broken(), ends, clock)
    with pytest.raises(ConnectionResetError):
        async for _ in stream:
            pass
    await stream.aclose()
    assert [(e.reason, e.bytes, e.usage.usage) for e in ends.seen] == [("upstream_error", 40, None)]


async def test_a_door_that_stops_reading_ends_it_as_closed() -> None:
    clock, ends = ManualClock(), Ends()
    closed = False

    async def source() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            yield b"data: {}\n\n"
            yield b"data: {}\n\n"
        finally:
            closed = True

    stream = relay(source(), ends, clock)
    await anext(stream)
    await stream.aclose()
    await stream.aclose()
    assert [e.reason for e in ends.seen] == ["closed"] and closed
