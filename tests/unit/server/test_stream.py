"""StreamedBody: bytes handed to the app as they arrive, with backpressure, refusals and an honest end."""

from __future__ import annotations

import asyncio

import pytest

from portcullis.errors import ClientError, ErrorCode
from portcullis.server.stream import BodyGone, StreamedBody


class Clock:
    """The loop time the connection would pass in, moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def body(high_water: int = 10, clock: Clock | None = None) -> tuple[StreamedBody, list[int]]:
    streamed = StreamedBody(high_water, clock or Clock())
    wanted: list[int] = []
    streamed.on_wanted = lambda: wanted.append(streamed.size)
    return streamed, wanted


def test_append_asks_to_pause_once_more_than_the_high_water_mark_waits() -> None:
    streamed, _ = body(high_water=10)
    assert streamed.append(b"12345") is False
    assert streamed.append(b"12345") is False
    assert streamed.append(b"1") is True


async def test_taking_the_bytes_asks_the_connection_to_read_on() -> None:
    streamed, wanted = body(high_water=4)
    streamed.append(b"hello")
    assert await streamed.next_chunk() == (b"hello", True)
    assert wanted == [5]


async def test_a_waiting_reader_gets_the_next_bytes_as_they_arrive() -> None:
    streamed, wanted = body()
    reader = asyncio.ensure_future(streamed.next_chunk())
    await asyncio.sleep(0)  # the reader is now waiting (one loop turn, no time)
    assert wanted == [0]  # it asked for input before waiting
    streamed.append(b"late")
    assert await reader == (b"late", True)


async def test_an_ended_body_says_no_more_after_its_last_bytes() -> None:
    streamed, _ = body()
    streamed.append(b"last")
    streamed.end()
    assert await streamed.next_chunk() == (b"last", False)
    assert await streamed.next_chunk() == (b"", False)


async def test_a_refusal_reaches_the_reader_as_the_servers_client_error() -> None:
    streamed, _ = body()
    streamed.append(b"part")
    refusal = ClientError("body_too_large", code=ErrorCode.REQUEST_TOO_LARGE)
    streamed.fail(refusal)
    with pytest.raises(ClientError) as raised:
        await streamed.next_chunk()
    assert raised.value is refusal


async def test_a_closed_body_raises_body_gone_never_a_clean_end() -> None:
    streamed, _ = body()
    reader = asyncio.ensure_future(streamed.next_chunk())
    await asyncio.sleep(0)
    streamed.close()
    with pytest.raises(BodyGone):
        await reader


def test_bytes_after_a_refusal_are_not_kept_and_reading_stays_paused() -> None:
    streamed, _ = body()
    streamed.fail(ClientError("bad_body_framing"))
    assert streamed.append(b"more") is True
    assert streamed.size == 0


async def test_time_before_the_app_asks_and_while_it_lags_is_not_counted_against_the_client() -> None:
    clock = Clock()
    streamed, _ = body(high_water=4, clock=clock)
    clock.now += 2.0  # the app's policies run before it reads the body
    assert streamed.paused_s == 2.0
    streamed.append(b"ab")
    assert await streamed.next_chunk() == (b"ab", True)
    clock.now += 5.0  # waiting for the client: counted
    streamed.append(b"hello")  # over the high-water mark: waiting for the app from here
    clock.now += 3.0
    assert await streamed.next_chunk() == (b"hello", True)
    clock.now += 1.0
    assert streamed.paused_s == 5.0
