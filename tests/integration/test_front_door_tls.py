"""The front door (our server, never uvicorn) terminating TLS (``listen.tls``).

A throwaway CA issues the server certificate in each test; the clients trust that CA and nothing
else. Behind TLS the gateway must say ``https`` (to the upstream in ``X-Forwarded-Proto``, to the
client with HSTS), refuse as it does in clear text (a problem document, audited), and keep its
time limits: a client that completes the handshake and then says nothing is cut by
``first_byte_timeout``, and so is one that never starts the handshake. Timeouts are injected small
(0.2 s); nothing sleeps, and nothing asserts a wall-clock duration.

Sources: RFC 9110 section 4.2.2 (https), RFC 6797 (HSTS), RFC 9112 section 3.2 (Host).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import orjson
import pytest
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, front_door_yaml, issue_tls_files, read_response

pytestmark = pytest.mark.timeout(30)


async def start_tls_front_door(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path, **listen: str
) -> tuple[Gateway, ssl.SSLContext]:
    files = await asyncio.to_thread(issue_tls_files, tmp_path)
    trust = await asyncio.to_thread(files.client_context)
    tls = f'{{cert_file: "{files.cert}", key_file: "{files.key}"}}'
    yaml_text = front_door_yaml(upstream.url, tls=tls, **listen)
    gw = await make_gateway(yaml_text, http_server="portcullis", verify=trust)
    return gw, trust


async def open_tls(gw: Gateway, trust: ssl.SSLContext) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose TLS handshake has completed (``open_connection`` returns after it)."""
    return await asyncio.open_connection("127.0.0.1", gw.port, ssl=trust, server_hostname="127.0.0.1")


async def read_to_end(reader: asyncio.StreamReader) -> bytes:
    """What the server still sends before it ends the connection (a reset or an unclean TLS end count as an end)."""
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):
            return await reader.read()
    return b""


async def test_the_upstream_is_told_the_client_came_over_https(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    gw, _ = await start_tls_front_door(make_gateway, upstream, tmp_path)
    r = await gw.client.get("/echo")
    assert r.status_code == 200
    assert upstream.seen[-1].all("x-forwarded-proto") == ["https"]


async def test_responses_over_tls_carry_hsts(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    gw, _ = await start_tls_front_door(make_gateway, upstream, tmp_path)
    r = await gw.client.get("/echo")
    assert r.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


async def test_a_refusal_over_tls_is_an_audited_problem_document_with_hsts(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    gw, trust = await start_tls_front_door(make_gateway, upstream, tmp_path)
    reader, writer = await open_tls(gw, trust)
    writer.write(b"GET /echo HTTP/1.1\r\n\r\n")  # RFC 9112 section 3.2: HTTP/1.1 without Host
    status, headers, body = await read_response(reader)
    assert status == 400
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"strict-transport-security"] == b"max-age=31536000; includeSubDomains"
    request_id = headers[b"x-request-id"].decode()
    doc = orjson.loads(body)
    assert (doc["code"], doc["status"], doc["request_id"]) == ("request.malformed", 400, request_id)
    assert await read_to_end(reader) == b""  # and the connection is closed
    writer.close()
    records = [r for r in await gw.audit_records() if r["request_id"] == request_id]
    assert [(r["status"], r["decision"]) for r in records] == [(400, "invalid_request:missing_host")]
    assert upstream.seen == []


async def test_a_client_that_completes_the_handshake_and_sends_nothing_is_cut_by_first_byte_timeout(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    gw, trust = await start_tls_front_door(make_gateway, upstream, tmp_path, first_byte_timeout="0.2s")
    reader, writer = await open_tls(gw, trust)
    assert await read_to_end(reader) == b""  # closed without an answer
    writer.close()
    records = [r for r in await gw.audit_records() if r["decision"] == "server_timeout:first_byte_timeout"]
    assert [r["status"] for r in records] == [408]


async def test_a_client_that_never_starts_the_handshake_is_cut_by_first_byte_timeout(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    # Before the handshake the connection is not yet ours (no request, no audit), but it holds a
    # descriptor: without a bound it would wait for asyncio's default of 60 s.
    gw, _ = await start_tls_front_door(make_gateway, upstream, tmp_path, first_byte_timeout="0.2s")
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)  # TCP only, no ClientHello
    assert await read_to_end(reader) == b""
    writer.close()
