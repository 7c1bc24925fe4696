"""Authorization rules in CEL through a real gateway: the README's examples, each allowed and refused.

Ownership, run-mode caps, office hours, an address range per consumer and a JSON body field, each
against a real upstream on 127.0.0.1, with the gateway's manual clock standing in for the time of
day. A refusal is 403 ``authz.forbidden`` and never reaches the upstream; the rule's name is in
the audit record only.
"""

from __future__ import annotations

import datetime

import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.testing import ManualClock

RULES = """
trusted_proxies: [127.0.0.1/32]
routes:
  - name: user-orders
    path: "/users/{user_id}/orders"
    upstream: api
    authorize:
      rules:
        - {name: own-orders, when: "params.user_id == principal.id || 'support' in principal.roles"}
  - name: runs
    methods: [POST]
    path: /workflows/{workflow_id}/runs
    upstream: api
    request: {json: {max_depth: 5}}
    authorize:
      headers: [x-run-mode]
      rules:
        - name: run-mode
          when: >-
            request.headers["x-run-mode"] == "validate_only"
            || (request.headers["x-run-mode"] == "test_run" && "workflow:run:test" in principal.scopes)
            || (request.headers["x-run-mode"] == "full_run" && "workflow:run:full" in principal.scopes)
        - {name: small-batches, when: "body == null || body.items.size() <= 10"}
  - name: reports
    path: /reports
    upstream: api
    authorize:
      rules:
        - name: office-hours
          when: >-
            now.getHours("Europe/Berlin") >= 9 && now.getHours("Europe/Berlin") < 18
            && now.getDayOfWeek("Europe/Berlin") >= 1 && now.getDayOfWeek("Europe/Berlin") <= 5
  - name: partner-feed
    path: /feed
    upstream: api
    authorize:
      query: [format]
      rules:
        - {name: partner-network, when: "principal.id != 'partner-a' || ip_in(context.client_ip, '203.0.113.0/24')"}
        - {name: known-format, when: "!('format' in request.query) || request.query['format'] in ['json', 'csv']"}
"""

# Monday 7 December 2026, 10:30 in Berlin (09:30 UTC).
MONDAY_MORNING = datetime.datetime(2026, 12, 7, 9, 30, tzinfo=datetime.UTC).timestamp()


async def rules_gateway(make_gateway: GatewayFactory, upstream: UpstreamServer, wall: float = MONDAY_MORNING):
    return await make_gateway(gateway_yaml(upstream.url, RULES), clock=ManualClock(wall=wall))


async def test_a_caller_reads_only_their_own_orders_unless_they_have_the_support_role(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await rules_gateway(make_gateway, upstream)
    alice = {"X-API-Key": await gw.key("alice")}
    support = {"X-API-Key": await gw.key("helpdesk", roles=("support",))}
    assert (await gw.client.get("/users/alice/orders", headers=alice)).status_code == 200
    refused = await gw.client.get("/users/bob/orders", headers=alice)
    assert refused.status_code == 403 and refused.json()["code"] == "authz.forbidden"
    assert "own-orders" not in refused.text  # the rule's name is for the audit only
    assert (await gw.client.get("/users/bob/orders", headers=support)).status_code == 200
    assert [s.raw_path for s in upstream.seen] == ["/users/alice/orders", "/users/bob/orders"]
    decisions = [r["decision"] for r in await gw.audit_records() if r["route"] == "user-orders"]
    assert decisions == ["allowed", "forbidden:rule:own-orders", "allowed"]


@pytest.mark.parametrize(("mode", "scopes", "status"), [
    ("validate_only", (), 200),
    ("test_run", (), 403),
    ("test_run", ("workflow:run:test",), 200),
    ("full_run", ("workflow:run:test",), 403),
    ("full_run", ("workflow:run:full",), 200),
    ("destroy_everything", ("workflow:run:full",), 403),
])
async def test_run_modes_are_capped_by_the_callers_scopes(
    make_gateway: GatewayFactory, upstream: UpstreamServer, mode: str, scopes: tuple[str, ...], status: int
) -> None:
    gw = await rules_gateway(make_gateway, upstream)
    key = await gw.key("agent", scopes)
    answer = await gw.client.post("/workflows/wf-1/runs", json={"items": [1, 2]},
                                  headers={"X-API-Key": key, "X-Run-Mode": mode})
    assert answer.status_code == status


async def test_a_run_without_its_mode_header_is_refused(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await rules_gateway(make_gateway, upstream)
    key = await gw.key("agent", ("workflow:run:full",))
    assert (await gw.client.post("/workflows/wf-1/runs", json={}, headers={"X-API-Key": key})).status_code == 403


async def test_a_rule_on_the_json_body_sees_the_body_the_backend_gets(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await rules_gateway(make_gateway, upstream)
    headers = {"X-API-Key": await gw.key("agent"), "X-Run-Mode": "validate_only"}
    ok = await gw.client.post("/workflows/wf-1/runs", json={"items": list(range(10))}, headers=headers)
    too_many = await gw.client.post("/workflows/wf-1/runs", json={"items": list(range(11))}, headers=headers)
    assert (ok.status_code, too_many.status_code) == (200, 403)
    [record] = [r for r in await gw.audit_records() if r["status"] == 403]
    assert record["decision"] == "forbidden:rule:small-batches"


@pytest.mark.parametrize(("hour_utc", "day", "status"), [
    (9, 7, 200),   # Monday 10:00 in Berlin
    (7, 7, 403),   # Monday 08:00 in Berlin
    (17, 7, 403),  # Monday 18:00 in Berlin
    (10, 12, 403),  # Saturday
])
async def test_reports_are_open_in_office_hours_only(
    make_gateway: GatewayFactory, upstream: UpstreamServer, hour_utc: int, day: int, status: int
) -> None:
    wall = datetime.datetime(2026, 12, day, hour_utc, 0, tzinfo=datetime.UTC).timestamp()
    gw = await rules_gateway(make_gateway, upstream, wall)
    key = await gw.key("analyst")
    assert (await gw.client.get("/reports", headers={"X-API-Key": key})).status_code == status


async def test_a_partner_is_served_only_from_its_own_network(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await rules_gateway(make_gateway, upstream)
    partner = {"X-API-Key": await gw.key("partner-a")}
    inside = await gw.client.get("/feed", headers={**partner, "X-Forwarded-For": "203.0.113.9"})
    outside = await gw.client.get("/feed", headers={**partner, "X-Forwarded-For": "198.51.100.9"})
    other = await gw.client.get("/feed", headers={"X-API-Key": await gw.key("b"), "X-Forwarded-For": "198.51.100.9"})
    assert (inside.status_code, outside.status_code, other.status_code) == (200, 403, 200)


async def test_rules_read_only_the_query_parameters_they_list(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await rules_gateway(make_gateway, upstream)
    key = {"X-API-Key": await gw.key("b")}
    assert (await gw.client.get("/feed?format=csv&page=2", headers=key)).status_code == 200
    assert (await gw.client.get("/feed?format=xml", headers=key)).status_code == 403
    assert (await gw.client.get("/feed?format=j%73on", headers=key)).status_code == 200  # decoded as the backend does
