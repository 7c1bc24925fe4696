"""Streaming pass-through per route: ``request.body_buffering: streamed`` against the default.

A raw client uploads slowly (one part, then the rest); the upstream is a ``RecordingUpstream``,
which records body bytes as they arrive, so "the upstream saw the first bytes before the upload
ended" is observed, never inferred from timing. Refusals mid-stream are in
``tests/attacks/test_streamed_body_attacks.py``.
"""

from __future__ import annotations

import asyncio

import pytest
from tests.conftest import Gateway, GatewayFactory, front_door_yaml, raw_connection, read_response

from portcullis.testing import RecordingUpstream

pytestmark = pytest.mark.timeout(30)

ROUTES = """
routes:
  - {name: upload, path: "/upload", methods: [POST], upstream: api, auth: none,
     request: {body_buffering: streamed, max_body_bytes: 8MiB}}
  - {name: buffered, path: "/buffered", methods: [POST], upstream: api, auth: none}
"""


async def start(make_gateway: GatewayFactory, upstream: RecordingUpstream, **listen: str) -> Gateway:
    return await make_gateway(front_door_yaml(upstream.url, ROUTES, **listen))


async def test_a_streaming_route_forwards_the_first_bytes_of_a_slow_upload_before_it_ends(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await start(make_gateway, recording_upstream)
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 14\r\n\r\nfirst")
        async with asyncio.timeout(10):
            await recording_upstream.wait_for(lambda up: bool(up.received) and up.received[0] == b"first")
        assert recording_upstream.outcomes == []  # the upstream's request is still open: the upload goes on
        assert recording_upstream.heads[0].header("content-length") == "14"
        writer.write(b" and last")
        status, _, _ = await read_response(reader)
    assert status == 200
    assert recording_upstream.bodies == [b"first and last"]
    assert recording_upstream.outcomes == ["complete"]


async def test_a_buffered_route_forwards_nothing_before_the_upload_ends(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    # The upload stalls after its first part: the gateway waits for the rest (until the body
    # timeout answers 408), and in all that time the upstream sees not even a head.
    gw = await start(make_gateway, recording_upstream, body_timeout="0.3s", body_min_rate="1MiB")
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(b"POST /buffered HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\n\r\nfirst")
        status, _, _ = await read_response(reader)
    assert status == 408
    assert recording_upstream.heads == []


async def test_a_streamed_chunked_upload_reaches_the_upstream_chunk_by_chunk(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await start(make_gateway, recording_upstream)
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        async with asyncio.timeout(10):
            await recording_upstream.wait_for(lambda up: bool(up.received) and up.received[0] == b"first")
        assert recording_upstream.heads[0].header("transfer-encoding") == "chunked"
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        status, _, _ = await read_response(reader)
    assert status == 200
    assert recording_upstream.bodies == [b"firstsecond"]


async def test_a_streamed_upload_many_times_the_buffer_arrives_intact(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    # 4 MiB through a 16 KiB buffer: reading pauses and resumes many times (backpressure).
    body = bytes(range(256)) * (16 * 1024)
    gw = await start(make_gateway, recording_upstream, body_buffer_bytes="16KiB")
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
        for at in range(0, len(body), 256 * 1024):
            writer.write(body[at:at + 256 * 1024])
            await writer.drain()
        status, _, _ = await read_response(reader)
    assert status == 200
    assert recording_upstream.bodies == [body]


async def test_the_connection_serves_the_next_request_after_a_streamed_one(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await start(make_gateway, recording_upstream)
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nfirst")
        assert (await read_response(reader))[0] == 200
        writer.write(b"POST /buffered HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nsecond")
        assert (await read_response(reader))[0] == 200
    assert recording_upstream.bodies == [b"first", b"second"]
