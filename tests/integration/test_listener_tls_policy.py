"""One TLS policy on both listeners: the API listener (our server) and the admin listener (uvicorn, given
our context through ``uvicorn_tls_factory``) refuse TLS 1.0/1.1 and honour ``min_version``."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from tests.conftest import GatewayFactory, UpstreamServer
from tests.integration.test_mtls_flow import s_client
from tests.mtls_certs import Pki, mtls_yaml

from portcullis.cli.serving import uvicorn_tls_factory
from portcullis.config.tls import TlsConfig

pytestmark = pytest.mark.timeout(30)
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
ROUTES = "routes: [{name: open, path: /healthz, upstream: api, auth: none}]\n"


@pytest.fixture
async def pki(tmp_path: Path) -> Pki:
    return await asyncio.to_thread(Pki, tmp_path)


@contextlib.asynccontextmanager
async def uvicorn_over_tls(tls: TlsConfig) -> AsyncIterator[int]:
    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"ok"})  # type: ignore[operator]

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog until uvicorn accepts: no readiness polling
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", ssl_certfile=tls.cert_file,
                                           ssl_keyfile=tls.key_file,
                                           ssl_context_factory=uvicorn_tls_factory(tls, "admin.tls")))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize("old", ["-tls1", "-tls1_1"])
async def test_the_admin_listener_on_uvicorn_refuses_tls_1_0_and_1_1_and_serves_tls_1_2(pki: Pki, old: str) -> None:
    tls = TlsConfig(cert_file=str(pki.server.cert), key_file=str(pki.server.key))
    async with uvicorn_over_tls(tls) as port:
        refused = await s_client(port, old, "-cipher", "DEFAULT:@SECLEVEL=0", send=REQUEST)
        served = await s_client(port, "-tls1_2", "-CAfile", str(pki.server_ca_file), send=REQUEST)
    assert b"HTTP/1.1" not in refused
    assert b"HTTP/1.1 200 " in served


async def test_min_version_1_3_refuses_a_tls_1_2_client_on_the_api_listener(
    make_gateway: GatewayFactory, upstream: UpstreamServer, pki: Pki
) -> None:
    yaml_text = mtls_yaml(upstream.url, pki, ROUTES, tls={"min_version": '"1.3"'})
    gw = await make_gateway(yaml_text, http_server="portcullis")
    refused = await s_client(gw.port, "-tls1_2", send=REQUEST)
    served = await s_client(gw.port, "-tls1_3", "-CAfile", str(pki.server_ca_file), send=REQUEST)
    assert b"HTTP/1.1" not in refused
    assert b"HTTP/1.1 200 " in served
