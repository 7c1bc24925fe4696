"""An upstream that cuts its body short after the head went out: what the client, audit, metrics and logs say.

Once the gateway has sent a response head, it cannot turn the answer into a 502; the only honest
signal left is to end the client's response without its proper end (fewer bytes than
``Content-Length``, or no terminating chunk: RFC 9112 section 8, "incomplete messages"). The audit
and the metric must then tell the same story the client saw: a 200 whose body the upstream cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
from tests.conftest import GatewayFactory, gateway_yaml

ROUTES = """
routes:
  - {name: cut, path: "/cut", upstream: api, auth: none}
"""


@dataclass
class CuttingUpstream:
    """Answers with ``head + partial`` and closes the connection once ``cut`` is set."""

    head: bytes
    partial: bytes
    cut: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0


@pytest.fixture
def cutting_upstream(request: pytest.FixtureRequest) -> CuttingUpstream:
    head, partial = request.param
    return CuttingUpstream(head, partial)


@pytest.fixture
async def serving(cutting_upstream: CuttingUpstream) -> AsyncIterator[CuttingUpstream]:
    up = cutting_upstream

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(up.head + up.partial)
            await writer.drain()
            await up.cut.wait()  # the client has the head and the partial body by now
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    up.port = server.sockets[0].getsockname()[1]
    async with server:
        yield up
        up.cut.set()


@contextlib.contextmanager
def uvicorn_logs_captured(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Let ``caplog`` see uvicorn's error log too (its loggers do not propagate to the root)."""
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.addHandler(caplog.handler)
    try:
        yield
    finally:
        uvicorn_error.removeHandler(caplog.handler)


async def read_until_closed(port: int, request: bytes, *, before_cut: int, cut: asyncio.Event) -> bytes:
    """Send ``request``; once ``before_cut`` bytes have arrived, let the upstream cut; read to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        received = b""
        async with asyncio.timeout(5):
            while len(received) < before_cut:
                chunk = await reader.read(65536)
                assert chunk, received
                received += chunk
            cut.set()
            while chunk := await reader.read(65536):
                received += chunk
        return received
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


CASES = [
    # RFC 9112 section 6.3 rule 5: a Content-Length body that ends early is incomplete.
    pytest.param((b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n", b"half"),
                 b"half", id="RFC9112-6.3-content-length-cut-short"),
    # RFC 9112 section 7.1: a chunked body without its last chunk is incomplete.
    pytest.param((b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n", b"4\r\nhalf\r\n"),
                 b"4\r\nhalf\r\n", id="RFC9112-7.1-chunked-without-last-chunk"),
]


@pytest.mark.parametrize(("cutting_upstream", "client_body"), CASES, indirect=["cutting_upstream"])
async def test_a_body_the_upstream_cuts_short_reaches_the_client_visibly_incomplete(
    make_gateway: GatewayFactory, serving: CuttingUpstream, client_body: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(f"http://127.0.0.1:{serving.port}", ROUTES))
    raw = b"GET /cut HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    # The gateway's head is at least 100 bytes; wait for it and the partial body before the cut.
    received = await read_until_closed(gw.port, raw, before_cut=100 + len(client_body), cut=serving.cut)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == client_body  # and then the connection closed: no more bytes, no last chunk
    if b"content-length: 10" not in head.lower():
        assert b"transfer-encoding: chunked" in head.lower()


@pytest.mark.parametrize(("cutting_upstream", "client_body"), CASES, indirect=["cutting_upstream"])
async def test_a_cut_body_is_audited_and_counted_as_the_200_the_client_saw(
    make_gateway: GatewayFactory, serving: CuttingUpstream, client_body: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(f"http://127.0.0.1:{serving.port}", ROUTES))
    raw = b"GET /cut HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    await read_until_closed(gw.port, raw, before_cut=100 + len(client_body), cut=serving.cut)
    (record,) = await gw.audit_records()
    assert (record["status"], record["upstream_status"], record["decision"]) == (
        200, 200, "upstream_error:response_truncated")
    assert record["bytes_out"] == 4
    registry = gw.services.metrics.registry
    assert registry.get_sample_value(
        "portcullis_upstream_errors_total", {"route": "cut", "kind": "upstream.truncated"}) == 1
    assert registry.get_sample_value(
        "portcullis_requests_total", {"route": "cut", "status": "200", "decision": "upstream_error"}) == 1
    assert registry.get_sample_value("portcullis_internal_errors_total") == 0


@pytest.mark.parametrize(("cutting_upstream", "client_body"), CASES, indirect=["cutting_upstream"])
async def test_a_cut_body_is_logged_once_without_a_traceback(
    make_gateway: GatewayFactory, serving: CuttingUpstream, client_body: bytes, caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await make_gateway(gateway_yaml(f"http://127.0.0.1:{serving.port}", ROUTES))
    raw = b"GET /cut HTTP/1.1\r\nHost: gw.test\r\n\r\n"
    with uvicorn_logs_captured(caplog):
        await read_until_closed(gw.port, raw, before_cut=100 + len(client_body), cut=serving.cut)
        (record,) = await gw.audit_records()
    noteworthy = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [(r.name, r.exc_info) for r in noteworthy] == [("portcullis.ingress", None)]
    message = noteworthy[0].getMessage()
    assert record["request_id"] in message
    assert "response_truncated" in message
