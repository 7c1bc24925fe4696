"""Metric labels stay bounded: what clients choose (paths, keys, addresses, agents, ids) never becomes a series.

Why it matters: a label that takes a client-chosen value gives an attacker a way to grow the
gateway's memory and the operator's Prometheus without bound, one request at a time. Two checks:
no metric declares a label named after such a value, and a burst of requests that differ in every
client-chosen field adds no series beyond those of the first few requests of the same kinds.
"""

from __future__ import annotations

import secrets

from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml

# Label names that would carry what a client chooses or what grows with traffic.
UNBOUNDED = {"path", "url", "target", "query", "consumer", "consumer_id", "key", "key_id", "client", "client_ip",
             "ip", "address", "user", "user_id", "user_agent", "request_id", "execution", "execution_id",
             "workflow", "workflow_id", "token", "token_id", "subject", "block_id"}

CONFIG = """
trusted_proxies: [127.0.0.1/32]
rate_limits:
  - {name: per-ip, key: ip, rates: ["2/minute"]}
routes:
  - {name: orders, path: "/orders/{order_id}", upstream: api}
  - {name: open, path: "/open/{rest:path}", upstream: api, auth: none}
"""


def series(gw: Gateway) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    return {(s.name, tuple(sorted(s.labels.items())))
            for family in text_string_to_metric_families(gw.services.metrics.render().decode())
            for s in family.samples}


def label_names(gw: Gateway) -> set[str]:
    return {name for _, labels in series(gw) for name, _ in labels} - {"le", "quantile"}


async def burst(gw: Gateway, key: str, n: int, *, seed: int) -> None:
    for i in range(n):
        junk = secrets.token_hex(6)
        headers = {"X-Forwarded-For": f"10.{seed}.{i // 250}.{i % 250 + 1}", "User-Agent": f"agent/{junk}"}
        for _ in range(3):  # 2/minute per address: allowed, allowed, limited
            await gw.client.get(f"/open/{junk}/{i}?q={junk}", headers=headers)
        await gw.client.get(f"/orders/{junk}", headers={**headers, "X-API-Key": key})
        await gw.client.get(f"/orders/{junk}", headers={**headers, "X-API-Key": f"pcl_{junk}abcdef_" + "A" * 43})
        await gw.client.get(f"/nowhere/{junk}", headers=headers)
        await gw.client.request("BREW", f"/open/{junk}", headers=headers)


async def test_no_metric_is_labelled_by_anything_a_client_chooses(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG))
    await burst(gw, await gw.key("alice"), 3, seed=1)
    names = label_names(gw)
    assert names and not names & UNBOUNDED, names & UNBOUNDED


async def test_a_burst_of_distinct_clients_paths_and_keys_adds_no_series(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, CONFIG))
    key = await gw.key("alice")
    await burst(gw, key, 5, seed=1)  # every kind of answer: allowed, limited, refused, unknown route, bad method
    assert any("limited" in str(labels) for _, labels in series(gw))
    before = series(gw)
    await burst(gw, key, 200, seed=2)
    assert series(gw) == before
