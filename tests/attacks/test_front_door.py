"""The front door (our HTTP server) under attack: sizes, time, caps and framing, over raw sockets.

Each refusal must be an RFC 9457 problem document with ``x-request-id`` and the security headers,
and must leave an audit record; each attack runs next to a normal client that must be served.
Timeouts are injected small (0.2 s) and nothing asserts a wall-clock duration.

Sources: RFC 9112 sections 2.2, 3.2, 5.2, 6.1, 6.3, 7.1, 9.3; RFC 9110 section 10.1.1 (Expect);
J. Kettle, "HTTP/1.1 must die" (2025: Expect-based desync); PortSwigger "HTTP request smuggling"
(CL.TE, TE.CL, TE.TE); CVE-2019-18277 (TE obfuscation), CVE-2018-7159 (chunk-size overflow),
CVE-2020-7238 (space before colon); slowloris (R. Hansen, 2009); OWASP-API4 (resource consumption).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import orjson
import pytest
from aiohttp import web
from tests.conftest import (
    Gateway,
    GatewayFactory,
    UpstreamServer,
    front_door_yaml,
    read_response,
    read_until_closed,
    start_front_door,
)

pytestmark = pytest.mark.timeout(30)




async def exchange(port: int, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        return await read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def assert_refusal(
    gw: Gateway, response: tuple[int, dict[bytes, bytes], bytes], status: int, code: str, decision: str,
) -> None:
    got, headers, body = response
    assert got == status, body
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close"
    assert headers[b"x-content-type-options"] == b"nosniff"  # the security headers reach refusals
    request_id = headers[b"x-request-id"].decode()
    doc = orjson.loads(body)
    assert doc["code"] == code and doc["status"] == status and doc["request_id"] == request_id
    records = [r for r in await gw.audit_records() if r["request_id"] == request_id]
    assert [(r["status"], r["decision"]) for r in records] == [(status, decision)]


async def assert_closed(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionResetError):
        assert await reader.read() == b""


async def served(gw: Gateway) -> None:
    r = await gw.client.get("/echo")
    assert r.status_code == 200


FRAMING = [
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
                 "te_not_chunked", id="CVE-2019-18277-te-obfuscation"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
                 "te_not_chunked", id="RFC9112-6.1-te-not-chunked"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                 "te_not_chunked", id="RFC9112-6.1-te-coding-list"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n", "bad_head", id="portswigger-TE.TE-repeated"),  # llhttp refuses it first
    pytest.param(b"POST /echo HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 "te_in_http10", id="RFC9112-6.1-te-in-http10"),
    pytest.param(b"GET /echo HTTP/1.1\r\n\r\n", "missing_host", id="RFC9112-3.2-missing-host"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate_host", id="RFC9112-3.2-duplicate-host"),
    pytest.param(b"GET /echo HTTP/1.1\nHost: a\n\n", "bad_head", id="RFC9112-2.2-bare-LF"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n", "bad_head", id="RFC9112-5.2-obs-fold"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", "bad_head",
                 id="CVE-2020-7238-space-before-colon"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                 "bad_body_framing", id="RFC9112-7.1-invalid-chunk-size"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nhello\r\n"
                 b"0\r\n\r\n", "bad_body_framing", id="CVE-2018-7159-chunk-size-overflow"),
]


@pytest.mark.parametrize(("payload", "reason"), FRAMING)
async def test_every_framing_error_is_a_problem_document_audited_and_the_connection_closed(
    make_gateway: GatewayFactory, upstream: UpstreamServer, payload: bytes, reason: str
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(payload)
    response = await read_response(reader)
    await assert_refusal(gw, response, 400, "request.malformed", f"invalid_request:{reason}")
    await assert_closed(reader)
    writer.close()
    assert upstream.seen == []
    await served(gw)


async def test_te_with_content_length_is_refused_before_the_body(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    # PortSwigger CL.TE: llhttp (strict) refuses the pair itself; either way a problem document.
    gw = await start_front_door(make_gateway, upstream)
    response = await exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert response[0] == 400 and response[1][b"content-type"] == b"application/problem+json"
    assert upstream.seen == []


EXPECTATIONS = [
    pytest.param(b"Expect: something", id="RFC9110-10.1.1-unknown-expectation"),
    pytest.param(b"Expect: 100-continue; foo=bar", id="RFC9110-10.1.1-100-continue-has-no-parameters"),
    pytest.param(b"Expect: y 100-continue", id="kettle-2025-expect-desync-obfuscated-value"),
    pytest.param(b"Expect: 100-continue\r\nExpect: x", id="RFC9110-5.3-unknown-member-in-a-second-field"),
]


@pytest.mark.parametrize("expect", EXPECTATIONS)
async def test_an_expectation_other_than_100_continue_gets_417_before_the_body(
    make_gateway: GatewayFactory, upstream: UpstreamServer, expect: bytes
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n" + expect + b"\r\n\r\n")
    response = await read_response(reader)  # no 100 (Continue) first, and no body was sent
    await assert_refusal(gw, response, 417, "request.expectation_failed", "invalid_request:expectation_unsupported")
    await assert_closed(reader)
    writer.close()
    assert upstream.seen == []
    await served(gw)


async def test_an_unterminated_head_is_cut_at_the_limit_with_bounded_reading(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream, max_header_bytes="4KiB")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Endless: ")
    sent = 0
    with contextlib.suppress(ConnectionError):
        while not reader.at_eof() and sent < 64 * 1024 * 1024:
            writer.write(b"a" * 1024)
            sent += 1024
            await writer.drain()
            if len(reader._buffer) or reader.at_eof():
                break
            await asyncio.sleep(0)
    response = await read_response(reader)
    await assert_refusal(gw, response, 431, "request.headers_too_large", "invalid_request:head_too_large")
    assert sent < 4 * 1024 * 1024  # cut long before a client could make it hold much
    writer.close()
    await served(gw)


async def test_too_many_header_fields_get_431(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await start_front_door(make_gateway, upstream, max_header_count=10)
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(11))
    response = await exchange(gw.port, b"GET /echo HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")
    await assert_refusal(gw, response, 431, "request.headers_too_large", "invalid_request:too_many_headers")


async def test_expect_fields_count_towards_the_header_field_limit(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream, max_header_count=10)
    fields = b"Expect: 100-continue\r\n" * 11
    response = await exchange(gw.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n" + fields + b"\r\n")
    await assert_refusal(gw, response, 431, "request.headers_too_large", "invalid_request:too_many_headers")


async def test_an_oversized_target_gets_414(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await start_front_door(make_gateway, upstream, max_target_bytes="1KiB")
    response = await exchange(gw.port, b"GET /echo?" + b"q" * 2000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    await assert_refusal(gw, response, 414, "request.target_too_long", "invalid_request:target_too_long")


async def test_slowloris_head_is_cut_by_the_head_timeout_while_others_are_served(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream, head_timeout="0.2s")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Slow: ")
    await served(gw)
    async with asyncio.timeout(5):  # the head's deadline, not the first-byte one (10 s) armed before it
        response = await read_response(reader)
    await assert_refusal(gw, response, 408, "request.timeout", "server_timeout:head_timeout")
    writer.close()


async def test_a_connection_that_sends_nothing_is_closed_and_audited(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream, first_byte_timeout="0.2s")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    await served(gw)
    await assert_closed(reader)
    writer.close()
    records = [r for r in await gw.audit_records() if r["decision"] == "server_timeout:first_byte_timeout"]
    assert [r["status"] for r in records] == [408]


async def test_a_slow_body_is_cut_by_the_body_timeout(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await start_front_door(make_gateway, upstream, body_timeout="0.2s", body_min_rate="1MiB")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
    await served(gw)
    response = await read_response(reader)
    await assert_refusal(gw, response, 408, "request.timeout", "server_timeout:body_timeout")
    assert upstream.seen[-1].raw_path == "/echo"  # the normal client's, not the slow one's
    assert len(upstream.seen) == 1
    writer.close()


async def test_a_declared_body_over_the_route_limit_gets_413_before_it_is_read(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await start_front_door(make_gateway, upstream)
    response = await exchange(gw.port, b"POST /small HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n")
    await assert_refusal(gw, response, 413, "request.too_large", "invalid_request:body_too_large")
    assert upstream.seen == []


async def test_a_chunked_body_over_the_route_limit_gets_413(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await start_front_door(make_gateway, upstream)
    response = await exchange(gw.port, b"POST /small HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                                       b"65\r\n" + b"x" * 101 + b"\r\n0\r\n\r\n")
    await assert_refusal(gw, response, 413, "request.too_large", "invalid_request:body_too_large")
    assert upstream.seen == []


async def test_a_client_that_never_reads_is_cut_and_releases_the_upstream(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    big = b"z" * (32 * 1024 * 1024)

    async def large(_: web.Request) -> web.StreamResponse:
        return web.Response(body=big)

    upstream.responses["/big"] = large
    gw = await start_front_door(make_gateway, upstream, write_timeout="0.2s", write_buffer_bytes="16KiB")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, limit=1024)
    writer.transport.pause_reading()  # the client never reads
    writer.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
    await served(gw)
    # The app records the request once its upstream answer is released: that is what we wait for.
    await gw.wait_for_record("big")
    writer.transport.resume_reading()
    received = await read_until_closed(reader)
    assert 0 < received < len(big)  # cut: the connection ended long before the answer did
    writer.close()
    await served(gw)


@pytest.mark.parametrize("max_stalled", [4, 1000], ids=["capped", "uncapped-control"])
async def test_a_hundred_clients_that_never_read_cannot_starve_the_upstream_pool(
    make_gateway: GatewayFactory, upstream: UpstreamServer, max_stalled: int
) -> None:
    # 100 clients ask for an answer larger than every buffer on the way and never read it, through
    # an upstream pool of 10, with the default 30 s write_timeout. Each waiting response holds an
    # upstream connection; at most `max_stalled_responses` may wait, the longest waiting is cut.
    # Capped, normal requests keep the rest of the pool; the control shows why the cap exists.
    big = b"z" * (8 * 1024 * 1024)

    async def large(_: web.Request) -> web.StreamResponse:
        return web.Response(body=big)

    upstream.responses["/big"] = large
    yaml = front_door_yaml(upstream.url, write_buffer_bytes="16KiB", max_stalled_responses=max_stalled).replace(
        "connect_timeout: 2s", "connect_timeout: 0.5s", 1).replace(
        "total_timeout: 5s}", "total_timeout: 5s, pool_size: 10}", 1)
    gw = await make_gateway(yaml)
    stalled: list[asyncio.StreamWriter] = []
    for _ in range(100):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        _, writer = await asyncio.open_connection(sock=sock, limit=1024)
        writer.transport.pause_reading()  # never reads
        writer.write(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        stalled.append(writer)
    try:
        # Capped, every attacker's request reaches the upstream in turn; uncapped, the first ten hold the pool.
        async with asyncio.timeout(20):
            while len(upstream.seen) < (100 if max_stalled < 10 else 10):
                await asyncio.sleep(0.05)
        statuses = [(await gw.client.get("/echo")).status_code for _ in range(20)]
        if max_stalled == 1000:
            assert 504 in statuses  # uncapped: ten stalled clients hold the pool, others wait and time out
            return
        assert statuses == [200] * 20
        cut = [r for r in await gw.audit_records() if r["decision"] == "client_cut:stalled"]
        assert len(cut) == 100 - max_stalled
        assert all(r["route"] == "big" and r["status"] == 200 and r["bytes_out"] < len(big) for r in cut)
    finally:
        for writer in stalled:
            writer.transport.abort()


async def test_connections_beyond_the_per_ip_cap_get_503(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await start_front_door(make_gateway, upstream, max_connections_per_ip=2)
    held = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    response = await read_response(reader)
    assert response[1][b"retry-after"] == b"1"
    await assert_refusal(gw, response, 503, "service.unavailable", "connection_cap:max_connections_per_ip")
    writer.close()
    for _, w in held:
        w.close()


async def test_connections_beyond_the_total_cap_get_503(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await start_front_door(make_gateway, upstream, max_connections=2)
    held = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(2)]
    response = await exchange(gw.port, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
    await assert_refusal(gw, response, 503, "service.unavailable", "connection_cap:max_connections")
    for _, w in held:
        w.close()
