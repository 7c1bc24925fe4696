"""Mutual TLS to an upstream: the gateway presents ``client_cert_file`` to an upstream that requires a client
certificate, trusts only the pinned ``ca_file`` for it, and refuses a key file others may read."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from tests.conftest import GatewayFactory, gateway_yaml
from tests.mtls_certs import ClientCert, Pki

from portcullis.gateway.reload import Reloader, ReloadResult

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def no_blocking_calls_in_the_loop() -> None:
    """Overrides the suite's blocking-call guard here: ``build_runtime`` stats the client key file (its mode
    check), which ``serve`` does before it serves and a reload does in its worker thread, but the test
    gateway builds its runtime on the loop."""
    return


@pytest.fixture
async def pki(tmp_path: Path) -> Pki:
    return await asyncio.to_thread(Pki, tmp_path)


@pytest.fixture
async def mtls_upstream(pki: Pki) -> AsyncIterator[int]:
    """An https backend that requires a client certificate from the client CA and names it in its answer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    await asyncio.to_thread(context.load_cert_chain, pki.server.cert, pki.server.key)
    await asyncio.to_thread(context.load_verify_locations, pki.ca_file)
    context.verify_mode = ssl.CERT_REQUIRED

    async def hello(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        return web.Response(text=f"hello {dict(x[0] for x in peer['subject'])['commonName']}" if peer else "?")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def yaml_for(port: int, pki: Pki, client: ClientCert | None) -> str:
    cert = f', client_cert_file: "{client.cert}", client_key_file: "{client.key}"' if client else ""
    text = gateway_yaml(f"https://127.0.0.1:{port}", "routes: [{name: h, path: /hello, upstream: api, auth: none}]\n")
    return text.replace("total_timeout: 5s}", f'total_timeout: 5s, ca_file: "{pki.server_ca_file}"{cert}}}')


async def test_the_gateway_presents_its_client_certificate_to_an_upstream_that_requires_one(
    make_gateway: GatewayFactory, pki: Pki, mtls_upstream: int
) -> None:
    client = await asyncio.to_thread(lambda: pki.issue("gateway", cn="gateway"))
    gw = await make_gateway(yaml_for(mtls_upstream, pki, client))
    r = await gw.client.get("/hello")
    assert (r.status_code, r.text) == (200, "hello gateway")


async def test_without_a_client_certificate_that_upstream_is_unavailable(
    make_gateway: GatewayFactory, pki: Pki, mtls_upstream: int
) -> None:
    gw = await make_gateway(yaml_for(mtls_upstream, pki, None))
    r = await gw.client.get("/hello")
    assert r.status_code == 502


async def test_a_client_key_file_readable_by_others_is_refused(
    make_gateway: GatewayFactory, pki: Pki, mtls_upstream: int, tmp_path: Path
) -> None:
    gw = await make_gateway(yaml_for(mtls_upstream, pki, None))
    client = await asyncio.to_thread(lambda: pki.issue("gateway", cn="gateway"))
    await asyncio.to_thread(os.chmod, client.key, 0o644)
    config = tmp_path / "gateway.yaml"
    await asyncio.to_thread(config.write_text, yaml_for(mtls_upstream, pki, client))
    reloader = Reloader(gw.app, config, grace_s=1)  # built as `serve` and every reload build it
    try:
        result = await reloader.reload()
    finally:
        await reloader.aclose()
    assert isinstance(result, ReloadResult)
    assert not result.ok
    assert result.error is not None
    assert "upstreams.api.client_key_file" in result.error and "chmod 600" in result.error
