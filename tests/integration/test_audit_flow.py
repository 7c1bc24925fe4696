"""Every request leaves exactly one masked audit record, in the file and in the store."""

from __future__ import annotations

import asyncio

from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.stores.base import AuditQuery

ROUTES = """
routes:
  - {name: open, path: "/open/{rest:path}", upstream: api, auth: none}
  - {name: orders, path: "/orders/{order_id}", upstream: api}
"""


async def test_n_requests_make_exactly_n_records(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    requests = [gw.client.get(f"/open/{i}") for i in range(60)]
    requests += [gw.client.get("/orders/1", headers={"X-API-Key": key}) for _ in range(20)]
    requests += [gw.client.get("/orders/1") for _ in range(10)]
    requests += [gw.client.get("/missing") for _ in range(10)]
    responses = await asyncio.gather(*requests)
    records = await gw.audit_records()
    assert len(records) == 100
    assert {r["request_id"] for r in records} == {r.headers["x-request-id"] for r in responses}
    stored = await gw.services.store.query_audit(AuditQuery(limit=1000))
    assert len(stored) == 100


async def test_a_record_says_who_what_and_why(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    r = await gw.client.post("/orders/9?debug=1", headers={"X-API-Key": key}, content=b"abc")
    (record,) = await gw.audit_records()
    assert record["request_id"] == r.headers["x-request-id"]
    assert record["consumer_id"] == "alice"
    assert record["key_id"] == key.split("_")[1]
    assert record["method"] == "POST"
    assert record["route"] == "orders"
    assert record["path"] == "/orders/9"
    assert record["status"] == 200 and record["upstream_status"] == 200
    assert record["decision"] == "allowed"
    assert record["bytes_in"] == 3 and record["bytes_out"] > 0
    assert record["client_ip"] == "127.0.0.1"
    assert record["time"].endswith("Z") or record["time"].endswith("+00:00")


async def test_secrets_in_the_request_never_reach_the_audit_file(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    key = await gw.key("alice")
    secret = key.split("_", 2)[2]
    await gw.client.get(f"/open/x?api_key={key}&token=s3cr3t-token&email=jane.doe@example.com&card=4111111111111111",
                        headers={"User-Agent": f"curl {key}", "Authorization": "Bearer abc.def.ghi"})
    await gw.client.get(f"/open/{key}")
    await gw.audit_records()
    raw = await asyncio.to_thread((gw.tmp / "audit.jsonl").read_text)
    for leaked in (secret, "s3cr3t-token", "jane.doe@example.com", "4111111111111111"):
        assert leaked not in raw, leaked


async def test_passwords_and_provider_keys_never_reach_the_audit_file(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES))
    github = "ghp_" + "Zq8Xk2Lm9Pv4Rt7Ws1Yb5Nc3Hd6Fg0JaQ1"  # made up, shaped as GitHub publishes
    aws = "AKIA" + "QX7TZ3RWV9KM2HPL"
    await gw.client.get(f"/open/keys/{github}?pass=hunter2&a%5Bpasswd%5D=hunter3&note={aws}",
                        headers={"User-Agent": f"ci-bot ({github})"})
    (record,) = await gw.audit_records()
    raw = await asyncio.to_thread((gw.tmp / "audit.jsonl").read_text)
    for leaked in ("hunter2", "hunter3", github[4:], aws[4:]):
        assert leaked not in raw, leaked
    assert record["path"] == "/open/keys/ghp_[REDACTED]"
    assert record["query"] == "pass=[REDACTED]&a%5Bpasswd%5D=[REDACTED]&note=AKIA[REDACTED]"
    assert record["user_agent"] == "ci-bot (ghp_[REDACTED])"


def _full_queue_yaml(upstream_url: str, when_full: str) -> str:
    # The writer wakes only for a full batch or after an hour: with a batch bigger than the queue,
    # three requests fill the queue and nothing drains it until the test calls flush().
    text = gateway_yaml(upstream_url, ROUTES)
    return text.replace(
        "audit: {file: audit.jsonl, spill_file: audit.spill.jsonl, flush_interval: 0.05s}",
        f"audit: {{file: audit.jsonl, spill_file: audit.spill.jsonl, flush_interval: 1h, batch_size: 1000,"
        f" queue_max: 3, when_full: {when_full}}}",
    )


async def test_a_full_audit_queue_sheds_requests_before_they_reach_the_upstream(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(_full_queue_yaml(upstream.url, "shed"))
    served = [await gw.client.get(f"/open/{i}") for i in range(3)]
    shed = await gw.client.get("/open/shed")

    assert [r.status_code for r in served] == [200, 200, 200]
    assert shed.status_code == 503
    assert shed.headers["content-type"] == "application/problem+json"
    assert shed.headers["retry-after"] == "1"
    assert shed.json()["code"] == "service.unavailable"
    assert shed.json()["request_id"] == shed.headers["x-request-id"]
    assert [s.raw_path for s in upstream.seen] == ["/open/0", "/open/1", "/open/2"]
    records = await gw.audit_records()  # flushes: the queue has room again
    assert [r["path"] for r in records] == ["/open/0", "/open/1", "/open/2"]
    assert (await gw.client.get("/open/after")).status_code == 200


async def test_with_when_full_drop_a_full_queue_serves_and_counts_the_lost_record(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(_full_queue_yaml(upstream.url, "drop"))
    statuses = [(await gw.client.get(f"/open/{i}")).status_code for i in range(4)]

    assert statuses == [200, 200, 200, 200]
    assert len(upstream.seen) == 4
    assert len(await gw.audit_records()) == 3
    assert gw.services.audit.stats.lost == 2  # one record, lost for each of the two sinks (file, store)
