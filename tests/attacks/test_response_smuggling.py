"""A backend's ambiguous or malformed response must be refused, and its connection never reused.

The ingress client reads responses that a compromised or buggy backend wrote. If it guessed at an
ambiguous frame, the bytes after it would be read as the answer to the *next* client's request
(response queue poisoning). Sources, named in each case's id: RFC 9112 sections 6.1-6.3 (message
body length), RFC 9110 section 15.3.5 (204 has no body), PortSwigger "HTTP response queue
poisoning" and "HTTP/1 desync" research, CVE-2021-22959/22960 (Node llhttp lenient parsing),
CVE-2022-32213/32215 (Node obs-fold and chunk extension handling), CVE-2023-44487-era desync
write-ups. The legitimate-but-unusual responses a real backend sends must still pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from tests.conftest import GatewayFactory, gateway_yaml, raw_request

from portcullis.errors import UpstreamProtocolError, UpstreamTimeout
from portcullis.upstream.base import Timeouts, UpstreamRequest
from portcullis.upstream.http1 import Http1Upstream

TIMEOUTS = Timeouts(connect_s=2.0, read_s=2.0, total_s=5.0)
GOOD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class ScriptedBackend:
    """Answers the n-th request it reads with the n-th scripted reply (then ``GOOD``), byte for byte."""

    replies: list[bytes]
    close_after_reply: bool = False
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(head)
                writer.write(self.replies.pop(0) if self.replies else GOOD)
                await writer.drain()
                if self.close_after_reply:
                    return
        finally:
            writer.close()


@pytest.fixture
async def backend() -> AsyncIterator[ScriptedBackend]:
    b = ScriptedBackend(replies=[])
    await b.start()
    try:
        yield b
    finally:
        await b.stop()


async def fetch(up: Http1Upstream, method: str = "GET") -> tuple[int, bytes]:
    resp = await up.send(UpstreamRequest(method, "/", [(b"host", b"backend")], None), timeouts=TIMEOUTS)
    try:
        return resp.status, b"".join([chunk async for chunk in resp.iter_body()])
    finally:
        await resp.aclose()


REFUSED = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nokk",
                 id="RFC9112-6.3-differing-content-lengths"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
                 id="RFC9112-6.3-repeated-content-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", id="RFC9112-6.3-content-length-list"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                 id="portswigger-response-CL.TE"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                 id="RFC9112-6.1-coding-other-than-chunked"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nok",
                 id="RFC9112-6.3-chunked-not-final"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                 id="CVE-2019-18277-te-obfuscation"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\nok",
                 id="portswigger-TE.TE-duplicate"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                 id="CVE-2020-7238-space-before-colon"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok", id="content-length-with-sign"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0x2\r\n\r\nok", id="content-length-in-hex"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1 1\r\n\r\nok", id="content-length-with-inner-space"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok",
                 id="CVE-2022-32213-obs-fold"),
    pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", id="CVE-2021-22959-bare-LF"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok", id="nul-in-header-value"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
                 id="CVE-2022-32215-bad-chunk-size"),
    pytest.param(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                 id="RFC9112-6.1-chunked-in-http10"),
    pytest.param(b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", id="http2-version-on-http1"),
    pytest.param(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                 id="unrequested-upgrade"),
    pytest.param(b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\nok", id="RFC9110-15.3.5-body-on-204"),
    pytest.param(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                 id="RFC9110-15.3.5-chunked-204"),
    pytest.param(b"SMUGGLED / HTTP/1.1\r\n\r\n", id="a-request-instead-of-a-response"),
    pytest.param(b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 2\r\n\r\nok",
                 id="response-head-over-64KiB"),
]


@pytest.mark.parametrize("reply", REFUSED)
async def test_an_ambiguous_response_is_refused_and_its_connection_dropped(
    backend: ScriptedBackend, reply: bytes
) -> None:
    backend.replies.append(reply)
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        with pytest.raises(UpstreamProtocolError):
            await fetch(up)
        assert up.pool.open_connections == 0
        # The next request gets its own answer on a new connection, not the leftovers.
        assert await fetch(up) == (200, b"ok")
        assert backend.connections == 2
    finally:
        await up.aclose()


@pytest.mark.parametrize("extra", [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned", id="portswigger-queue-poisoning"),
    pytest.param(b"junk", id="bytes-after-a-complete-response"),
])
async def test_bytes_after_a_complete_response_are_never_read_as_the_next_answer(
    backend: ScriptedBackend, extra: bytes
) -> None:
    backend.replies.append(GOOD + extra)
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        assert await fetch(up) == (200, b"ok")
        # The complete first answer is delivered; the extra bytes poison only its connection.
        backend.replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        assert await fetch(up) == (200, b"second")
        assert backend.connections == 2
    finally:
        await up.aclose()


async def test_bytes_on_an_idle_connection_drop_it_before_it_can_be_reused(backend: ScriptedBackend) -> None:
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        assert await fetch(up) == (200, b"ok")
        assert up.pool.idle_connections == 1
        # An unsolicited answer, queued before the next request is even sent.
        backend.writers[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned")
        async with asyncio.timeout(2):
            while up.pool.open_connections:
                await asyncio.sleep(0.005)
        backend.replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        assert await fetch(up) == (200, b"second")
    finally:
        await up.aclose()


async def test_a_body_after_the_answer_to_head_is_never_read_as_the_next_answer(backend: ScriptedBackend) -> None:
    backend.replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n" + b"poisoned")
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        assert await fetch(up, "HEAD") == (200, b"")
        backend.replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        assert await fetch(up) == (200, b"second")
        assert backend.connections == 2
    finally:
        await up.aclose()


async def test_a_truncated_body_is_an_error_not_a_short_answer(backend: ScriptedBackend) -> None:
    backend.replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
    backend.close_after_reply = True
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        resp = await up.send(UpstreamRequest("GET", "/", [(b"host", b"b")], None), timeouts=TIMEOUTS)
        received: list[bytes] = []

        async def read_all() -> None:
            async for chunk in resp.iter_body():
                received.append(chunk)

        with pytest.raises(UpstreamProtocolError):
            await read_all()
        await resp.aclose()
        assert b"".join(received) == b"half"
        assert up.pool.open_connections == 0
    finally:
        await up.aclose()


async def test_a_truncated_chunked_body_is_an_error(backend: ScriptedBackend) -> None:
    backend.replies.append(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n")
    backend.close_after_reply = True
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        resp = await up.send(UpstreamRequest("GET", "/", [(b"host", b"b")], None), timeouts=TIMEOUTS)
        with pytest.raises(UpstreamProtocolError):
            _ = [chunk async for chunk in resp.iter_body()]
        await resp.aclose()
    finally:
        await up.aclose()


ACCEPTED = [
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length:  2 \r\n\r\nok", b"ok", True, id="content-length-with-ows"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1;ext=v\r\nk\r\n0\r\n\r\n",
                 b"ok", True, id="chunked-with-an-extension"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n",
                 b"ok", True, id="chunked-with-a-trailer"),
    pytest.param(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                 b"ok", True, id="100-continue-then-the-answer"),
    pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                 b"ok", True, id="103-early-hints-then-the-answer"),
    pytest.param(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"x\"\r\n\r\n",
                 b"", True, id="304-with-the-representations-length"),
    pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", b"", True, id="204"),
    pytest.param(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
                 b"ok", True, id="http10-keep-alive"),
    pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok", False, id="http10-without-keep-alive"),
    pytest.param(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
                 b"ok", False, id="connection-close"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\n\r\nok",
                 b"ok", True, id="obs-text-in-a-header-value"),
]


@pytest.mark.parametrize(("reply", "body", "reused"), ACCEPTED)
async def test_unusual_but_valid_responses_pass_and_keep_alive_is_honoured(
    backend: ScriptedBackend, reply: bytes, body: bytes, reused: bool
) -> None:
    backend.replies.append(reply)
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        status, received = await fetch(up)
        assert received == body and status in (200, 204, 304)
        assert await fetch(up) == (200, b"ok")
        assert backend.connections == (1 if reused else 2)
    finally:
        await up.aclose()


async def test_a_close_delimited_body_is_read_to_the_end(backend: ScriptedBackend) -> None:
    backend.replies.append(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + b"x" * 100_000)
    backend.close_after_reply = True
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        assert await fetch(up) == (200, b"x" * 100_000)
        assert up.pool.open_connections == 0
    finally:
        await up.aclose()


async def test_a_backend_that_never_ends_its_interim_responses_times_out(backend: ScriptedBackend) -> None:
    backend.replies.append(b"HTTP/1.1 100 Continue\r\n\r\n" * 50)
    up = Http1Upstream(f"http://127.0.0.1:{backend.port}", pool_size=2)
    try:
        with pytest.raises(UpstreamTimeout):
            await up.send(UpstreamRequest("GET", "/", [(b"host", b"b")], None),
                          timeouts=Timeouts(connect_s=1.0, read_s=0.2, total_s=1.0))
    finally:
        await up.aclose()


async def test_through_the_gateway_a_smuggled_response_is_a_502_and_the_next_client_is_unharmed(
    make_gateway: GatewayFactory, backend: ScriptedBackend
) -> None:
    backend.replies.append(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\npoisoned")
    routes = '\nroutes:\n  - {name: open, path: "/", upstream: api, auth: none}\n'
    gw = await make_gateway(gateway_yaml(f"http://127.0.0.1:{backend.port}", routes, keys=False))
    first = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 502")
    assert b"upstream.protocol_error" in first and b"poisoned" not in first
    second = await raw_request(gw.port, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"\r\n\r\nok")
    decisions = [r["decision"] for r in await gw.audit_records()]
    assert decisions == ["upstream_error:response_malformed", "allowed"]  # llhttp refuses CL+TE first
