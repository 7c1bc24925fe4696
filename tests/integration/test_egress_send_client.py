"""The send phase's client (the lean HTTP/1.1 client, pinned): where it connects, what it sends, how
it fails.

The provider is a raw HTTP/1.1 server on 127.0.0.1 (each test says what it answers), reachable only
through an explicit exception for 127.0.0.0/8 in the route's policy; names are answered by a fixed
resolver, so a DNS-rebinding server is played without DNS. These are the promises aiohttp kept
before this client replaced it: resolve-then-pin on every new connection, the original name as the
TLS name, the same request head, the same error reasons.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest
from tests.conftest import self_signed_cert

from portcullis.egress.call.phase5_client import PinnedClients
from portcullis.egress.resolver import StaticResolver
from portcullis.egress.response_guard import ResponseLimits, ResponseRefused
from portcullis.egress.ssrf import GuardPolicy, SsrfGuard
from portcullis.errors import UpstreamTimeout, UpstreamUnavailable
from portcullis.upstream.base import Timeouts

TIMEOUTS = Timeouts(connect_s=2.0, read_s=2.0, total_s=5.0)
LIMITS = ResponseLimits()
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"

Reply = Callable[[bytes], Awaitable[bytes | None]]  # request head -> raw answer (None: say nothing)


@dataclass
class Provider:
    """A raw backend: records each request head, answers with ``reply``, counts connections."""

    reply: Reply
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0


async def _default(_: bytes) -> bytes:
    return OK


@contextlib.asynccontextmanager
async def provider(reply: Reply = _default, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Provider]:
    state = Provider(reply)
    writers: set[asyncio.StreamWriter] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                state.heads.append(head + body)
                answer = await state.reply(head)
                if answer is None:
                    await asyncio.Event().wait()  # never answers; the client gives up
                    return
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writers.discard(writer)
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for w in list(writers):
            w.close()
        await server.wait_closed()


def clients(resolver: StaticResolver, port: int, *, exception: bool = True,
            tls: ssl.SSLContext | None = None) -> PinnedClients:
    policy = GuardPolicy(allowed_networks=(ip_network("127.0.0.0/8"),) if exception else (),
                         allowed_ports=frozenset({port}), allow_http=True)
    return PinnedClients(SsrfGuard(resolver), policy, tls=tls)


def partner(*answers: list[str]) -> StaticResolver:
    return StaticResolver({"api.partner.test": [[ip_address(a) for a in answer] for answer in answers]})


async def test_the_call_goes_to_the_checked_address_with_the_original_host_and_aiohttps_head() -> None:
    async with provider() as up:
        resolver = partner(["127.0.0.1"])
        c = clients(resolver, up.port)
        try:
            got = await c.exchange("POST", f"http://api.partner.test:{up.port}/v1/chat?x=1",
                                   [(b"x-trace", b"t"), (b"accept", b"application/json")], b'{"a":1}',
                                   limits=LIMITS, timeouts=TIMEOUTS)
            again = await c.exchange("GET", f"http://api.partner.test:{up.port}/v1/models", [], None,
                                     limits=LIMITS, timeouts=TIMEOUTS)
        finally:
            await c.aclose()
    assert (got.status, got.body, again.status) == (200, b'{"ok":true}', 200)
    assert resolver.lookups == ["api.partner.test"] and up.connections == 1  # one connection, checked once
    head = up.heads[0].decode()
    assert head.startswith("POST /v1/chat?x=1 HTTP/1.1\r\n")
    lines = set(head.lower().split("\r\n"))
    assert {f"host: api.partner.test:{up.port}", "x-trace: t", "accept: application/json",
            "accept-encoding: gzip, deflate", "content-type: application/octet-stream", "content-length: 7"} <= lines
    assert "accept: */*" not in lines  # the caller's own Accept is kept, the default only fills a gap
    assert "accept: */*" in set(up.heads[1].decode().lower().split("\r\n"))


async def test_every_new_connection_is_checked_again_and_a_rebinding_answer_is_refused() -> None:
    async def close_each(_: bytes) -> bytes:
        return OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)

    async with provider(close_each) as up:
        # First answer: the (excepted) test server. Second: a private address outside the exception.
        resolver = partner(["127.0.0.1"], ["10.0.0.7"])
        c = clients(resolver, up.port)
        url = f"http://api.partner.test:{up.port}/v1/hello"
        try:
            assert (await c.exchange("GET", url, [], None, limits=LIMITS, timeouts=TIMEOUTS)).status == 200
            with pytest.raises(UpstreamUnavailable) as info:
                await c.exchange("GET", url, [], None, limits=LIMITS, timeouts=TIMEOUTS)
        finally:
            await c.aclose()
    assert info.value.reason == "egress_blocked:address_private"
    assert resolver.lookups == ["api.partner.test", "api.partner.test"] and len(up.heads) == 1


async def test_without_the_exception_loopback_is_never_reached() -> None:
    async with provider() as up:
        c = clients(partner(["127.0.0.1"]), up.port, exception=False)
        try:
            with pytest.raises(UpstreamUnavailable) as info:
                await c.exchange("GET", f"http://api.partner.test:{up.port}/", [], None, limits=LIMITS,
                                 timeouts=TIMEOUTS)
        finally:
            await c.aclose()
    assert info.value.reason == "egress_blocked:address_loopback"
    assert up.connections == 0


async def test_hop_by_hop_headers_and_cookies_stay_behind_and_header_bytes_cross_unchanged() -> None:
    async def answer(_: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nSet-Cookie: s=1\r\n"
                b"X-Provider: caf\xe9\r\n\r\nok")

    async with provider(answer) as up:
        c = clients(partner(["127.0.0.1"]), up.port)
        try:
            got = await c.exchange("GET", f"http://api.partner.test:{up.port}/", [], None, limits=LIMITS,
                                   timeouts=TIMEOUTS)
        finally:
            await c.aclose()
    assert got.headers == [(b"content-length", b"2"), (b"x-provider", b"caf\xe9")]


@pytest.mark.parametrize(("name", "reason"), [("api.partner.test", None), ("other.partner.test", "egress_unreachable")])
async def test_tls_goes_to_the_checked_address_and_verifies_the_routes_host(
    tmp_path: Path, name: str, reason: str | None
) -> None:
    cert, key = await asyncio.to_thread(self_signed_cert, tmp_path, names=(name,))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(server_tls.load_cert_chain, cert, key)
    client_tls = await asyncio.to_thread(ssl.create_default_context, cafile=str(cert))
    async with provider(ssl_context=server_tls) as up:
        c = clients(partner(["127.0.0.1"]), up.port, tls=client_tls)
        try:
            call = c.exchange("GET", f"https://api.partner.test:{up.port}/v1", [], None, limits=LIMITS,
                              timeouts=TIMEOUTS)
            if reason is None:
                assert (await call).body == b'{"ok":true}'
            else:
                with pytest.raises(UpstreamUnavailable) as info:
                    await call
                assert info.value.reason == reason
                assert up.heads == []
        finally:
            await c.aclose()


async def test_a_closed_port_is_unreachable_and_silence_is_a_timeout() -> None:
    async def silent(_: bytes) -> None:
        return None

    async with provider(silent) as up:
        c = clients(partner(["127.0.0.1"]), up.port)
        try:
            with pytest.raises(UpstreamTimeout) as timeout:
                await c.exchange("GET", f"http://api.partner.test:{up.port}/", [], None, limits=LIMITS,
                                 timeouts=Timeouts(connect_s=2.0, read_s=0.2, total_s=5.0))
        finally:
            await c.aclose()
    assert timeout.value.reason == "egress_timeout"
    c = clients(partner(["127.0.0.1"]), up.port)  # the provider is gone: nothing listens there now
    try:
        with pytest.raises(UpstreamUnavailable) as refused:
            await c.exchange("GET", f"http://api.partner.test:{up.port}/", [], None, limits=LIMITS, timeouts=TIMEOUTS)
    finally:
        await c.aclose()
    assert refused.value.reason == "egress_unreachable"


async def test_a_cut_body_is_a_failed_connection_and_limits_refuse_whole_and_streamed_bodies() -> None:
    async def answer(head: bytes) -> bytes:
        if b"/cut" in head:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort"
        if b"/big" in head:
            return b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64
        return b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\r\nhi"

    async with provider(answer) as up:
        c = clients(partner(["127.0.0.1"]), up.port)
        base = f"http://api.partner.test:{up.port}"
        try:
            with pytest.raises(UpstreamUnavailable) as cut:
                await c.exchange("GET", base + "/cut", [], None, limits=LIMITS, timeouts=TIMEOUTS)
            with pytest.raises(ResponseRefused) as big:
                await c.exchange("GET", base + "/big", [], None, limits=ResponseLimits(max_bytes=10),
                                 timeouts=TIMEOUTS)
            with pytest.raises(ResponseRefused) as media:
                await c.exchange("GET", base + "/page", [], None,
                                 limits=ResponseLimits(content_types=("application/json",)), timeouts=TIMEOUTS)
            assert (await c.exchange("GET", base + "/page", [], None, limits=LIMITS, timeouts=TIMEOUTS)).body == b"hi"
        finally:
            await c.aclose()
    assert (cut.value.reason, big.value.reason, media.value.reason) == (
        "egress_connection_failed", "response_too_large", "response_content_type")


async def test_by_default_the_systems_cas_decide_and_a_self_signed_provider_is_refused(tmp_path: Path) -> None:
    cert, key = await asyncio.to_thread(self_signed_cert, tmp_path, names=("api.partner.test",))
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(server_tls.load_cert_chain, cert, key)
    async with provider(ssl_context=server_tls) as up:
        c = clients(partner(["127.0.0.1"]), up.port)  # no context given: the system's CAs
        try:
            with pytest.raises(UpstreamUnavailable) as info:
                await asyncio.gather(*(c.exchange("GET", f"https://api.partner.test:{up.port}/v1", [], None,
                                                  limits=LIMITS, timeouts=TIMEOUTS) for _ in range(3)))
        finally:
            await c.aclose()
    assert info.value.reason == "egress_unreachable" and up.heads == []
