"""A route that streams request bodies (``request.body_buffering: streamed``) under attack.

The trade-off the operator accepted: the upstream is contacted before the body is known to be
complete and well framed. What must still hold: the route's size limit, the body timeout and
llhttp's chunk framing cut the body mid-stream; the client gets the problem document when no
response head has gone out; the upstream sees its request aborted (the connection ends before the
body its framing announced), never a short body passed off as complete; nothing logs a traceback;
the request is audited once, with the reason.

Sources: RFC 9112 sections 6.3 and 7.1 (chunked framing), CVE-2018-7159 (chunk-size overflow),
OWASP-API4 (unrestricted resource consumption), slowloris's body variant (R. Hansen, 2009; "slow
POST", Wong Onn Chee, 2010). The legitimate streamed uploads are in
``tests/integration/test_streamed_bodies.py``.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from tests.conftest import Gateway, GatewayFactory, front_door_yaml, raw_connection, read_response

from portcullis.testing import RecordingUpstream

pytestmark = pytest.mark.timeout(30)

ROUTES = """
routes:
  - {name: upload, path: "/upload", methods: [POST], upstream: api, auth: none,
     request: {body_buffering: streamed, max_body_bytes: 100}}
"""
HEAD = b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
FIRST = b"3c\r\n" + b"a" * 60 + b"\r\n"  # 60 bytes, within the limit of 100


async def start(make_gateway: GatewayFactory, upstream: RecordingUpstream, **listen: str) -> Gateway:
    return await make_gateway(front_door_yaml(upstream.url, ROUTES, **listen))


async def upstream_has(upstream: RecordingUpstream, size: int) -> None:
    """Wait until the upstream has received ``size`` body bytes of the first request."""
    async with asyncio.timeout(10):
        await upstream.wait_for(lambda up: bool(up.received) and len(up.received[0]) >= size)


async def upstream_ended(upstream: RecordingUpstream) -> list[str]:
    async with asyncio.timeout(10):
        await upstream.wait_for(lambda up: bool(up.outcomes))
    return upstream.outcomes


async def assert_problem(gw: Gateway, response: tuple[int, dict[bytes, bytes], bytes], status: int, code: str,
                         decision: str) -> None:
    got, headers, body = response
    assert got == status, body
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"connection"] == b"close"
    request_id = headers[b"x-request-id"].decode()
    assert orjson.loads(body) == {"type": f"https://portcullis.dev/errors/{code}", "title": orjson.loads(body)["title"],
                                  "status": status, "code": code, "request_id": request_id}
    records = [r for r in await gw.audit_records() if r["request_id"] == request_id]
    assert [(r["route"], r["status"], r["decision"]) for r in records] == [("upload", status, decision)]


async def test_the_route_limit_cuts_a_streamed_body_with_413_and_the_upstream_sees_it_aborted(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await start(make_gateway, recording_upstream)
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(HEAD + FIRST)
        await upstream_has(recording_upstream, 60)  # truly mid-stream: the upstream has the first part
        writer.write(b"3c\r\n" + b"b" * 60 + b"\r\n")  # 120 in all: over the limit of 100
        response = await read_response(reader)
    await assert_problem(gw, response, 413, "request.too_large", "invalid_request:body_too_large")
    assert await upstream_ended(recording_upstream) == ["cut"]
    assert bytes(recording_upstream.received[0]) == b"a" * 60  # not a byte beyond the limit
    assert recording_upstream.bodies == []


async def test_a_bad_chunk_on_a_streaming_route_ends_the_request_without_a_traceback(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await start(make_gateway, recording_upstream)
    caplog.set_level(logging.INFO)
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(HEAD + FIRST)
        await upstream_has(recording_upstream, 60)
        writer.write(b"zz\r\nhello\r\n0\r\n\r\n")  # RFC 9112 section 7.1: a chunk size is hex digits
        response = await read_response(reader)
    await assert_problem(gw, response, 400, "request.malformed", "invalid_request:bad_body_framing")
    assert await upstream_ended(recording_upstream) == ["cut"]
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


async def test_a_chunk_size_overflow_on_a_streaming_route_is_refused_mid_stream(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await start(make_gateway, recording_upstream)
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(HEAD + FIRST)
        await upstream_has(recording_upstream, 60)
        writer.write(b"1ffffffffffffffff\r\nhello\r\n0\r\n\r\n")  # CVE-2018-7159
        response = await read_response(reader)
    await assert_problem(gw, response, 400, "request.malformed", "invalid_request:bad_body_framing")
    assert await upstream_ended(recording_upstream) == ["cut"]


async def test_a_stalled_streamed_upload_is_cut_by_the_body_timeout_with_408(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await start(make_gateway, recording_upstream, body_timeout="0.3s", body_min_rate="1MiB")
    async with raw_connection(gw.port) as (reader, writer):
        writer.write(HEAD + FIRST)  # then nothing more: slow POST
        response = await read_response(reader)
    await assert_problem(gw, response, 408, "request.timeout", "server_timeout:body_timeout")
    assert await upstream_ended(recording_upstream) == ["cut"]


async def test_a_client_that_leaves_mid_stream_aborts_the_upstream_request(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await start(make_gateway, recording_upstream)
    async with raw_connection(gw.port) as (_, writer):
        writer.write(HEAD + FIRST)
        await upstream_has(recording_upstream, 60)
    assert await upstream_ended(recording_upstream) == ["cut"]
    async with asyncio.timeout(10):
        while not (records := [r for r in await gw.audit_records() if r["route"] == "upload"]):
            await asyncio.sleep(0.05)  # the audit writer's own flush; nothing here depends on its timing
    assert [(r["status"], r["decision"]) for r in records] == [(499, "client_disconnected")]
