"""HTTP/1.1 behaviour of the front door (our server) that legitimate clients rely on.

Keep-alive reuse, pipelined requests answered in order (RFC 9112 section 9.3.2), ``Expect:
100-continue`` in the forms RFC 9110 allows (section 10.1.1), HEAD (RFC 9110 section 9.3.2), bodies spilled to disk
and forwarded intact, and a graceful drain that finishes what is in flight.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiohttp import web
from tests.conftest import GatewayFactory, UpstreamServer, read_response, start_front_door


async def test_keep_alive_serves_several_requests_on_one_connection(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    for i in range(3):
        writer.write(b"GET /echo?n=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        status, headers, body = await read_response(reader)
        assert status == 200 and b"connection" not in headers
        assert orjson.loads(body)["path"] == f"/echo?n={i}"
    writer.close()


async def test_pipelined_requests_are_answered_in_order(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\n"
                 b"POST /echo?n=2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                 b"GET /echo?n=3 HTTP/1.1\r\nHost: a\r\n\r\n")
    paths = [orjson.loads((await read_response(reader))[2])["path"] for _ in range(3)]
    assert paths == ["/echo?n=1", "/echo?n=2", "/echo?n=3"]
    writer.close()


async def test_a_refusal_after_pipelined_requests_comes_after_their_answers(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /echo?n=1 HTTP/1.1\r\nHost: a\r\n\r\nGET /echo HTTP/1.1\nHost: a\n\n")
    assert (await read_response(reader))[0] == 200
    status, headers, _ = await read_response(reader)
    assert status == 400 and headers[b"content-type"] == b"application/problem+json"
    writer.close()


@pytest.mark.parametrize("expect", [
    pytest.param(b"Expect: 100-continue", id="RFC9110-10.1.1-100-continue"),
    pytest.param(b"Expect: 100-Continue", id="RFC9110-10.1.1-field-value-is-case-insensitive"),
    pytest.param(b"Expect:   100-continue \t", id="RFC9110-5.5-surrounding-whitespace-is-not-the-value"),
    pytest.param(b"Expect: 100-continue, 100-continue", id="RFC9110-5.6.1-list-of-the-same-member"),
    pytest.param(b"Expect: 100-continue\r\nExpect: 100-continue", id="RFC9110-5.3-two-fields-are-one-list"),
])
async def test_expect_100_continue_gets_an_interim_answer_before_the_body(
    make_gateway: GatewayFactory, upstream: UpstreamServer, expect: bytes
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n" + expect + b"\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    status, _, body = await read_response(reader)
    assert status == 200 and orjson.loads(body)["body_bytes"] == 5
    writer.close()


async def test_an_answered_expectation_is_not_passed_on_to_the_backend(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"hello")
    assert (await read_response(reader))[0] == 200
    assert upstream.seen[-1].all("expect") == []
    writer.close()


async def test_expect_100_continue_in_http10_is_ignored_and_the_body_read(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    # RFC 9110 section 10.1.1: a server MUST ignore a 100-continue expectation in an HTTP/1.0 request.
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /echo HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello")
    status, _, body = await read_response(reader)  # the final answer comes first: no 100 before it
    assert status == 200 and orjson.loads(body)["body_bytes"] == 5
    writer.close()


async def test_head_gets_headers_without_a_body_and_the_connection_stays_usable(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\nGET /echo?after HTTP/1.1\r\nHost: a\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    status, _, body = await read_response(reader)  # the next bytes are the GET's answer, not a HEAD body
    assert status == 200 and orjson.loads(body)["path"] == "/echo?after"
    writer.close()


async def test_a_body_beyond_the_memory_threshold_is_spilled_and_forwarded_intact(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream, body_buffer_bytes="4KiB")
    payload = bytes(range(256)) * 1024
    r = await gw.client.post("/echo", content=payload)
    assert r.status_code == 200
    assert upstream.seen[-1].body == payload


async def test_graceful_drain_closes_idle_connections_and_finishes_requests_in_flight(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def hang(_: web.Request) -> web.StreamResponse:
        arrived.set()
        await release.wait()
        return web.json_response({"late": True})

    upstream.responses["/hang"] = hang
    gw = await start_front_door(make_gateway, upstream)
    assert gw.listener is not None
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", gw.port)
    idle_writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_response(idle_reader))[0] == 200
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
    await arrived.wait()
    await gw.client.aclose()
    stopping = asyncio.create_task(gw.listener.stop())
    assert await idle_reader.read() == b""  # the idle keep-alive connection is closed at once
    release.set()
    status, headers, body = await read_response(reader)
    assert status == 200 and headers[b"connection"] == b"close" and orjson.loads(body) == {"late": True}
    await stopping
    assert gw.listener.open_connections == 0
    idle_writer.close()
    writer.close()
