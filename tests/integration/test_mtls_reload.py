"""Certificates reloaded without a restart: ``reload`` (the admin API's and SIGHUP's) re-reads the API
listener's certificate, key, client CAs and CRLs; new connections get them, and a broken file is
refused with the old context kept serving."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from tests.conftest import GatewayFactory, UpstreamServer
from tests.integration.test_mtls_flow import ROUTES, get, issue
from tests.mtls_certs import Pki, mtls_yaml

from portcullis.gateway.reload import Reloader, ReloadResult

pytestmark = pytest.mark.timeout(30)


def install(source: Pki, live: Path) -> None:
    """Copy ``source``'s server certificate, key and client CA over the files the config names."""
    shutil.copy(source.server.cert, live / "server.pem")
    shutil.copy(source.server.key, live / "server.key")
    shutil.copy(source.ca_file, live / "client-ca.pem")


async def test_a_reload_applies_new_server_and_client_ca_files_to_new_connections_and_refuses_a_broken_one(
    make_gateway: GatewayFactory, upstream: UpstreamServer, tmp_path: Path
) -> None:
    old_dir, new_dir, live = tmp_path / "old", tmp_path / "new", tmp_path / "live"
    for d in (old_dir, new_dir, live):
        await asyncio.to_thread(d.mkdir)
    old, new = await asyncio.to_thread(Pki, old_dir), await asyncio.to_thread(Pki, new_dir)
    await asyncio.to_thread(install, old, live)
    tls = {"cert_file": f'"{live / "server.pem"}"', "key_file": f'"{live / "server.key"}"',
           "client_ca_file": f'"{live / "client-ca.pem"}"'}
    text = mtls_yaml(upstream.url, old, ROUTES, tls=tls)
    config = tmp_path / "gateway.yaml"
    await asyncio.to_thread(config.write_text, text)
    gw = await make_gateway(text, http_server="portcullis")
    reloader = Reloader(gw.app, config, grace_s=1)
    old_client = await issue(old, "billing", dns=("billing.internal",))
    new_client = await issue(new, "billing", dns=("billing.internal",))
    try:
        assert (await get(old, gw.port, "/billing", old_client)).status_code == 200

        await asyncio.to_thread(install, new, live)
        assert await reloader.reload() == ReloadResult(True)
        assert (await get(new, gw.port, "/billing", new_client)).status_code == 200  # new server cert, new CA
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await get(new, gw.port, "/billing", old_client)  # the old client CA is gone

        await asyncio.to_thread((live / "server.key").write_text, "not a key")
        gw.clock.advance(10)
        result = await reloader.reload()
        assert isinstance(result, ReloadResult)
        assert not result.ok
        assert result.error is not None and "listen.tls.cert_file/key_file" in result.error
        assert (await get(new, gw.port, "/billing", new_client)).status_code == 200  # still the last good one
    finally:
        await reloader.aclose()
