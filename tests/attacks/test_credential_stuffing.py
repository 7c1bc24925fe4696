"""Key guessing and credential stuffing are stopped per client IP before any store lookup.

Sources: OWASP API2:2023 (broken authentication: no brute-force protection), OWASP Automated
Threats OAT-008 (credential stuffing) and OAT-007 (credential cracking).
"""

from __future__ import annotations

import asyncio
import secrets

from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.stores.sqlite import SqliteStore

ROUTES = """
shield: {failed_auth_rate: "20/minute", unauthenticated_rate: "30/minute"}
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


async def test_two_thousand_wrong_keys_from_one_ip_are_cut_off_cheaply(
    make_gateway: GatewayFactory, upstream: UpstreamServer, monkeypatch: object
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    lookups = 0
    original = SqliteStore.get

    async def counting_get(self: SqliteStore, key_id: str):  # type: ignore[no-untyped-def]
        nonlocal lookups
        lookups += 1
        return await original(self, key_id)

    gw.services.store.get = counting_get.__get__(gw.services.store)  # type: ignore[method-assign]
    statuses: dict[int, int] = {}

    async def attempt() -> None:
        key = f"pcl_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
        r = await gw.client.get("/orders/1", headers={"X-API-Key": key})
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    for _ in range(40):  # 100x the failed-auth budget of 20; 10,000 took most of a minute of CI
        await asyncio.gather(*(attempt() for _ in range(50)))
    assert sum(statuses.values()) == 2_000
    assert statuses.get(401, 0) <= 20
    assert statuses[429] >= 2_000 - 20
    assert lookups <= 20
    assert upstream.seen == []


async def test_the_cut_off_lifts_when_the_window_passes_and_valid_keys_work_again(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    good = await gw.key("alice")
    for _ in range(25):
        await gw.client.get("/orders/1", headers={"X-API-Key": "pcl_aaaaaaaaaaaa_" + "b" * 43})
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": good})).status_code == 429
    gw.clock.advance(61)
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": good})).status_code == 200


async def test_requests_without_credentials_are_limited_per_ip(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    statuses = [(await gw.client.get("/orders/1")).status_code for _ in range(35)]
    assert statuses.count(401) == 30
    assert statuses[30:] == [429] * 5


async def test_a_cut_off_ip_is_refused_even_with_a_valid_cached_key(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    # Otherwise the limit is an oracle: wrong guesses answer 429 and the right one 200.
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    good = await gw.key("alice")
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": good})).status_code == 200  # now cached
    wrong_secret = good[: -1] + ("A" if good[-1] != "A" else "B")
    statuses = [(await gw.client.get("/orders/1", headers={"X-API-Key": wrong_secret})).status_code
                for _ in range(25)]
    assert statuses[:20] == [401] * 20 and statuses[20:] == [429] * 5
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": good})).status_code == 429
    gw.clock.advance(61)
    assert (await gw.client.get("/orders/1", headers={"X-API-Key": good})).status_code == 200


async def test_a_burst_of_valid_requests_on_a_cold_cache_is_not_taken_for_guessing(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    # 50 connections opening at once with one valid key must not spend the failed-auth budget
    # (20/minute here): concurrent lookups of one credential share one reservation.
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    good = await gw.key("alice")
    responses = await asyncio.gather(*(gw.client.get("/orders/1", headers={"X-API-Key": good}) for _ in range(50)))
    assert [r.status_code for r in responses] == [200] * 50
    # and the budget is untouched: 20 wrong keys still answer 401, the 21st 429
    statuses = [(await gw.client.get("/orders/1", headers={"X-API-Key": "pcl_aaaaaaaaaaaa_" + "b" * 43})).status_code
                for _ in range(21)]
    assert statuses == [401] * 20 + [429]
