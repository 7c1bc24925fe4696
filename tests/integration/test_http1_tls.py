"""TLS from the gateway to its upstream: verified by default, against a CA file, or (by explicit
choice) not at all. A certificate the client cannot verify is an unavailable upstream, never a
silent downgrade to trusting it."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from tests.conftest import self_signed_cert

from portcullis.errors import UpstreamUnavailable
from portcullis.upstream.base import Timeouts, UpstreamRequest
from portcullis.upstream.http1 import Http1Upstream

TIMEOUTS = Timeouts(connect_s=2.0, read_s=2.0, total_s=5.0)


async def serve_https(tmp_path: Path, names: tuple[str, ...]) -> tuple[web.AppRunner, int, Path]:
    cert, key = await asyncio.to_thread(lambda: self_signed_cert(tmp_path, names=names))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(context.load_cert_chain, cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls:{request.headers['Host']}")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, runner.addresses[0][1], cert


@pytest.fixture
async def https_backend(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    runner, port, cert = await serve_https(tmp_path, ("127.0.0.1", "localhost"))
    try:
        yield port, cert
    finally:
        await runner.cleanup()


async def fetch(up: Http1Upstream) -> tuple[int, bytes]:
    resp = await up.send(UpstreamRequest("GET", "/hello", [(b"host", b"api.internal")], None), timeouts=TIMEOUTS)
    try:
        return resp.status, b"".join([c async for c in resp.iter_body()])
    finally:
        await resp.aclose()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_an_upstream_whose_certificate_verifies_against_the_ca_file_is_reached(
    https_backend: tuple[int, Path], host: str
) -> None:
    port, cert = https_backend
    up = Http1Upstream(f"https://{host}:{port}", pool_size=2, ca_file=str(cert))
    try:
        assert await fetch(up) == (200, b"tls:api.internal")
        assert await fetch(up) == (200, b"tls:api.internal")
        assert up.pool.open_connections == 1  # TLS connections are pooled like plain ones
    finally:
        await up.aclose()


async def test_an_unverifiable_certificate_is_refused(https_backend: tuple[int, Path]) -> None:
    port, _ = https_backend
    up = Http1Upstream(f"https://localhost:{port}", pool_size=2)  # system CAs only
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await fetch(up)
        assert info.value.reason == "upstream_tls_verify_failed"
        assert up.pool.open_connections == 0
    finally:
        await up.aclose()


async def test_a_trusted_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    runner, port, cert = await serve_https(tmp_path, ("other.internal",))
    up = Http1Upstream(f"https://localhost:{port}", pool_size=2, ca_file=str(cert))
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await fetch(up)
        assert info.value.reason == "upstream_tls_verify_failed"
    finally:
        await up.aclose()
        await runner.cleanup()


async def test_verification_can_be_turned_off_explicitly(https_backend: tuple[int, Path]) -> None:
    port, _ = https_backend
    up = Http1Upstream(f"https://localhost:{port}", pool_size=2, verify_tls=False)
    try:
        assert await fetch(up) == (200, b"tls:api.internal")
    finally:
        await up.aclose()


class Addresses:
    """An address hook that records each call (one per new connection) and answers in turn."""

    def __init__(self, *answers: list[str] | Exception) -> None:
        self._answers = list(answers)
        self.calls = 0

    async def __call__(self) -> list[str]:
        self.calls += 1
        answer = self._answers.pop(0) if len(self._answers) > 1 else self._answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


async def pinned_backend(tmp_path: Path, name: str) -> tuple[web.AppRunner, int, ssl.SSLContext]:
    runner, port, cert = await serve_https(tmp_path, (name,))
    context = await asyncio.to_thread(ssl.create_default_context, cafile=str(cert))
    return runner, port, context


async def test_a_pinned_address_is_reached_with_the_url_host_as_sni_and_verified_name(tmp_path: Path) -> None:
    runner, port, context = await pinned_backend(tmp_path, "api.partner.test")
    hook = Addresses(["127.0.0.1"])
    # The name is never looked up (it does not resolve here): the hook's address is where it goes.
    up = Http1Upstream(f"https://api.partner.test:{port}", pool_size=2, ssl_context=context, addresses=hook)
    try:
        assert await fetch(up) == (200, b"tls:api.internal")
        assert await fetch(up) == (200, b"tls:api.internal")
        assert (hook.calls, up.pool.open_connections) == (1, 1)  # asked once per new connection
    finally:
        await up.aclose()
        await runner.cleanup()


async def test_a_pinned_address_whose_certificate_names_another_host_is_refused(tmp_path: Path) -> None:
    runner, port, context = await pinned_backend(tmp_path, "other.partner.test")
    up = Http1Upstream(f"https://api.partner.test:{port}", pool_size=2, ssl_context=context,
                       addresses=Addresses(["127.0.0.1", "127.0.0.1"]))
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await fetch(up)
        assert info.value.reason == "upstream_tls_verify_failed"
        assert up.pool.open_connections == 0
    finally:
        await up.aclose()
        await runner.cleanup()


async def test_the_next_address_is_tried_when_one_refuses_the_connection(tmp_path: Path) -> None:
    runner, port, context = await pinned_backend(tmp_path, "api.partner.test")
    # Nothing listens on 127.0.0.2 at that port: refused, then the second address answers.
    up = Http1Upstream(f"https://api.partner.test:{port}", pool_size=2, ssl_context=context,
                       addresses=Addresses(["127.0.0.2", "127.0.0.1"]))
    try:
        assert await fetch(up) == (200, b"tls:api.internal")
    finally:
        await up.aclose()
        await runner.cleanup()


async def test_a_refusal_from_the_address_hook_ends_the_attempt_before_any_connection(tmp_path: Path) -> None:
    runner, port, context = await pinned_backend(tmp_path, "api.partner.test")
    hook = Addresses(UpstreamUnavailable("egress_blocked:address_private"), ["127.0.0.1"])
    up = Http1Upstream(f"https://api.partner.test:{port}", pool_size=1, ssl_context=context, addresses=hook)
    try:
        with pytest.raises(UpstreamUnavailable) as info:
            await fetch(up)
        assert info.value.reason == "egress_blocked:address_private"
        assert up.pool.open_connections == 0  # the slot is given back
        assert await fetch(up) == (200, b"tls:api.internal")
    finally:
        await up.aclose()
        await runner.cleanup()
