"""Metric labels stay bounded: what clients choose (paths, keys, addresses, agents, ids) never becomes a series.

Why it matters: a label that takes a client-chosen value gives an attacker a way to grow the
gateway's memory and the operator's Prometheus without bound, one request at a time. Two checks:
no metric declares a label named after such a value, and a burst of requests that differ in every
client-chosen field adds no series beyond those of the first few requests of the same kinds.
"""

from __future__ import annotations

import secrets
from ipaddress import ip_address

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import Gateway, GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.egress.resolver import StaticResolver
from portcullis.testing import catch_all, serve_app

# Label names that would carry what a client chooses or what grows with traffic.
UNBOUNDED = {"path", "url", "target", "query", "consumer", "consumer_id", "key", "key_id", "client", "client_ip",
             "ip", "address", "user", "user_id", "user_agent", "request_id", "execution", "execution_id",
             "workflow", "workflow_id", "token", "token_id", "subject", "block_id"}

# The one family that names workflows and users: only the few fullest per budget, at each scrape.
TOP_BURNERS = "portcullis_egress_budget_top_used_ratio"

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


async def test_hundreds_of_workflows_spending_budgets_name_only_the_top_few_per_budget(
    make_gateway: GatewayFactory
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    async with serve_app(catch_all(ok)) as port:
        gw = await make_gateway(gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  budgets: {{execution_calls: 5, workflow_calls_per_day: 50, user_calls_per_day: 5000, top_burners: 3}}
  routes:
    - {{name: partner, url: "http://api.partner.test:{port}", allow_http: true, allow_networks: [127.0.0.0/8]}}
"""), resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}))
        key = await gw.key("agent-7")
        for i in range(300):
            workflow = f"wf-{secrets.token_hex(4)}"
            for n in range(1 + i % 4):
                r = await gw.client.get("/egress/partner/x", headers={
                    "X-API-Key": key, "X-Workflow-Id": workflow, "X-Execution-Id": f"ex-{i}-{n}"})
                assert r.status_code == 200
    named = [labels for name, labels in series(gw) if name == TOP_BURNERS]
    per_budget = {budget: sum(1 for labels in named if ("budget", budget) in labels)
                  for budget in ("workflow_calls_per_day", "user_calls_per_day", "execution_calls")}
    assert per_budget == {"workflow_calls_per_day": 3, "user_calls_per_day": 1, "execution_calls": 0}
    others = {label for name, labels in series(gw) if name != TOP_BURNERS for label, _ in labels}
    assert not others & UNBOUNDED, others & UNBOUNDED
