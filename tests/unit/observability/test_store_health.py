"""The store probe behind ``portcullis_store_up``: up while the store answers, down when it fails or hangs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.observability.store_health import StoreProbe
from portcullis.stores.sqlite import SqliteStore


async def test_a_store_that_answers_is_up_and_a_closed_one_is_down(tmp_path: Path) -> None:
    store = await SqliteStore.connect(str(tmp_path / "p.db"))
    probe = StoreProbe(store)
    assert await probe.probe() is True and probe.up
    await store.aclose()
    assert await probe.probe() is False and not probe.up


async def test_a_store_that_hangs_is_down_after_the_probe_timeout() -> None:
    class Hanging:
        async def ping(self) -> None:
            await asyncio.Event().wait()

    probe = StoreProbe(Hanging(), timeout_s=0.05)
    assert await probe.probe() is False


async def test_a_gateway_exports_the_probe_as_portcullis_store_up(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, "routes: [{name: r, path: /r, upstream: api, auth: none}]\n"))
    assert b"portcullis_store_up 1.0" in gw.services.metrics.render()
    await gw.services.store.aclose()
    assert gw.services.store_probe is not None and await gw.services.store_probe.probe() is False
    assert b"portcullis_store_up 0.0" in gw.services.metrics.render()
