"""Whatever bytes a client sends the proxy door, its request reader ends in one of three ways only:
whole requests within the bounds, a refusal with a fixed reason (``ReadRefused``), or the end of
input; never another exception, never a request larger than its limits, never a wait without end.

The bytes go through a real ``asyncio.StreamReader``, fed a random piece per turn of the loop, so
the reader meets them as it meets a socket's, split at random places.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.egress.proxy.reader import ReadRefused, RequestReader
from portcullis.server.limits import ServerLimits

LIMITS = ServerLimits(max_header_bytes=2048, max_target_bytes=512, max_header_count=20, max_body_bytes=4096,
                      first_byte_timeout=5, head_timeout=5, body_timeout=5)

PIECES = st.sampled_from([
    b"GET ", b"POST ", b"CONNECT ", b"http://a.example/x ", b"a.example:443 ", b"/x ", b"HTTP/1.1\r\n",
    b"HTTP/1.0\r\n", b"Host: a.example\r\n", b"Content-Length: 5\r\n", b"Content-Length: 99999\r\n",
    b"Transfer-Encoding: chunked\r\n", b"Expect: 100-continue\r\n", b"X: y\r\n", b"\r\n", b"\n", b"\r",
    b"5\r\nhello\r\n0\r\n\r\n", b"hello", b"\x00", b"\x16\x03\x01", b" ", b":", b"A" * 600,
])


async def _read_all(chunks: list[bytes]) -> list[tuple[str, int]]:
    """The requests read (method, body size) until a refusal, an upgrade or the end of input."""
    stream = asyncio.StreamReader()

    async def feed() -> None:  # one chunk per turn of the loop: the reader meets the pieces apart
        for chunk in chunks:
            stream.feed_data(chunk)
            await asyncio.sleep(0)
        stream.feed_eof()

    feeder = asyncio.create_task(feed())
    try:
        return await _read(RequestReader(stream, LIMITS))
    finally:
        await feeder


async def _read(reader: RequestReader) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    async with asyncio.timeout(5):
        while True:
            try:
                request = await reader.next()
            except ReadRefused as refused:
                reason = refused.reason
                break
            if request is None:
                return seen
            assert len(request.body) <= LIMITS.max_body_bytes
            assert len(request.target) <= LIMITS.max_target_bytes
            assert len(request.headers) <= LIMITS.max_header_count
            seen.append((request.method, len(request.body)))
            if request.upgrade:
                return seen
    assert reason.isidentifier()  # a fixed token for the audit, never client text
    return seen


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(PIECES, max_size=12).map(b"".join), max_size=6))
def test_any_bytes_end_in_requests_a_refusal_or_the_end_of_input(chunks: list[bytes]) -> None:
    asyncio.run(_read_all(chunks))


def test_pipelined_requests_come_whole_and_in_order() -> None:
    data = (b"POST http://a.example/1 HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\n\r\nhello"
            b"GET http://a.example/2 HTTP/1.1\r\nHost: a.example\r\n\r\n")
    assert asyncio.run(_read_all([data[:30], data[30:70], data[70:]])) == [("POST", 5), ("GET", 0)]


async def _refusal(data: bytes) -> str | None:
    stream = asyncio.StreamReader()
    stream.feed_data(data)
    stream.feed_eof()
    try:
        await RequestReader(stream, LIMITS).next()
    except ReadRefused as refused:
        return refused.reason
    return None


def test_expect_fields_count_against_the_field_limit_as_they_do_at_the_front_door() -> None:
    # The reader shares the server's head counting (server/request_head.py): an Expect field is
    # answered here and never forwarded, but a head of them is still a head of too many fields.
    head = b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\n" + b"Expect: 100-continue\r\n" * 25 + b"\r\n"
    assert asyncio.run(_refusal(head)) == "too_many_headers"


def test_an_answered_expect_is_not_passed_on() -> None:
    data = b"POST http://a.example/ HTTP/1.1\r\nHost: a.example\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"

    async def read() -> list[bytes]:
        stream = asyncio.StreamReader()
        stream.feed_data(data)
        stream.feed_eof()
        request = await RequestReader(stream, LIMITS).next()
        assert request is not None
        return [name for name, _ in request.headers]

    assert b"expect" not in asyncio.run(read())
