"""The data path through a real gateway to a real upstream: what the backend receives, what the client sees."""

from __future__ import annotations

import asyncio

import httpx
import orjson
import pytest
from aiohttp import web
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml, raw_request

PUBLIC = """
routes:
  - {name: items, path: "/items/{item_id}", upstream: api, auth: none}
  - {name: files, path: "/files/{rest:path}", upstream: api, auth: none}
  - {name: upload, path: "/upload", methods: [POST, PUT], upstream: api, auth: none,
     request: {max_body_bytes: 8MiB}}
  - {name: small, path: "/small", methods: [POST], upstream: api, auth: none,
     request: {max_body_bytes: 1KiB}}
"""


async def test_request_reaches_the_upstream_with_the_canonical_path_and_query(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    r = await gw.client.get("/files/a/./b//c/%7Euser/%20x?q=1&z=%2F")
    assert r.status_code == 200
    assert upstream.seen[-1].raw_path == "/files/a/b/c/~user/%20x?q=1&z=%2F"


async def test_hop_by_hop_headers_and_the_ones_named_in_connection_are_removed(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    r = await gw.client.get("/items/1", headers={
        "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "drop-me", "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==", "TE": "trailers", "X-Kept": "yes",
    })
    assert r.status_code == 200
    seen = upstream.seen[-1]
    for name in ("x-secret-hop", "keep-alive", "proxy-authorization", "te"):
        assert seen.header(name) is None, name
    assert seen.header("x-kept") == "yes"


async def test_forwarded_headers_are_set_by_the_gateway_not_the_client(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    await gw.client.get("/items/1", headers={
        "X-Forwarded-For": "1.2.3.4", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
        "X-Real-IP": "5.6.7.8", "Forwarded": "for=9.9.9.9", "True-Client-IP": "8.8.8.8",
        "Host": "api.example.com",
    })
    seen = upstream.seen[-1]
    assert seen.all("x-forwarded-for") == ["127.0.0.1"]
    assert seen.all("x-forwarded-proto") == ["http"]
    assert seen.all("x-forwarded-host") == ["api.example.com"]
    assert seen.header("x-real-ip") is None
    assert seen.header("forwarded") is None
    assert seen.header("true-client-ip") is None
    assert seen.header("host") == upstream.url.removeprefix("http://")


async def test_a_trusted_proxy_chain_is_extended_not_replaced(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, "trusted_proxies: [127.0.0.0/8]\n" + PUBLIC))
    await gw.client.get("/items/1", headers={"X-Forwarded-For": "198.51.100.7"})
    assert upstream.seen[-1].all("x-forwarded-for") == ["198.51.100.7, 127.0.0.1"]
    records = await gw.audit_records()
    assert records[-1]["client_ip"] == "198.51.100.7"


async def test_request_id_is_generated_returned_forwarded_and_audited(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    r = await gw.client.get("/items/1", headers={"X-Request-ID": "client-chosen-id"})
    rid = r.headers["x-request-id"]
    assert rid != "client-chosen-id" and len(rid) == 32
    assert upstream.seen[-1].all("x-request-id") == [rid]
    records = await gw.audit_records()
    assert records[-1]["request_id"] == rid


async def test_the_client_sees_only_the_gateways_request_id(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    async def echo_own_id(request: web.Request) -> web.StreamResponse:
        return web.json_response({}, headers={"X-Request-Id": "upstream-made-this"})

    upstream.responses["/items/own-id"] = echo_own_id
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    r = await gw.client.get("/items/own-id")
    assert r.headers.get_list("x-request-id") == [upstream.seen[-1].header("x-request-id")]


async def test_request_id_from_a_trusted_proxy_is_kept(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, "trusted_proxies: [127.0.0.1/32]\n" + PUBLIC))
    r = await gw.client.get("/items/1", headers={"X-Request-ID": "lb-7f3a9"})
    assert r.headers["x-request-id"] == "lb-7f3a9"
    assert upstream.seen[-1].header("x-request-id") == "lb-7f3a9"


async def test_traceparent_is_passed_through(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await gw.client.get("/items/1", headers={"traceparent": tp})
    assert upstream.seen[-1].header("traceparent") == tp


async def test_unreachable_upstream_is_a_generic_502(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml("http://127.0.0.1:9", PUBLIC))
    r = await gw.client.get("/items/1")
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == "upstream.unavailable"
    assert body["request_id"] == r.headers["x-request-id"]
    assert set(body) == {"type", "title", "status", "code", "request_id"}


async def test_slow_upstream_is_a_generic_504(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    async def never(request: web.Request) -> web.StreamResponse:
        await upstream.hang.wait()
        return web.Response(text="late")

    upstream.responses["/items/slow"] = never
    yaml = gateway_yaml(upstream.url, PUBLIC).replace("read_timeout: 2s", "read_timeout: 0.2s")
    gw = await make_gateway(yaml)
    r = await gw.client.get("/items/slow")
    assert r.status_code == 504
    assert r.json()["code"] == "upstream.timeout"


async def test_large_allowed_body_is_streamed_to_the_upstream(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    payload = b"x" * (5 * 1024 * 1024)

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(payload), 65536):
            yield payload[i:i + 65536]

    r = await gw.client.post("/upload", content=chunks())
    assert r.status_code == 200
    assert upstream.seen[-1].body == payload
    assert r.json()["body_bytes"] == len(payload)


async def test_declared_oversized_body_is_refused_before_reading(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    r = await gw.client.post("/small", content=b"y" * 5000)
    assert r.status_code == 413
    assert r.json()["code"] == "request.too_large"
    assert upstream.seen == []


async def test_streamed_oversized_body_is_cut_with_413(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"z" * 512

    r = await gw.client.post("/small", content=chunks())
    assert r.status_code == 413
    assert r.json()["code"] == "request.too_large"


async def test_upstream_identity_headers_are_removed_and_security_headers_added(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    r = await gw.client.get("/items/1")
    assert "server" not in r.headers
    assert "x-powered-by" not in r.headers
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in r.headers  # plain HTTP: HSTS would be meaningless
    assert len(r.headers.get_list("date")) == 1


async def test_unknown_path_and_wrong_method_are_problem_documents(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    r = await gw.client.get("/nowhere")
    assert (r.status_code, r.json()["code"]) == (404, "route.not_found")
    assert r.headers["x-content-type-options"] == "nosniff"
    r = await gw.client.get("/upload")
    assert (r.status_code, r.json()["code"]) == (405, "route.method_not_allowed")
    assert "POST" in r.headers["allow"]
    assert upstream.seen == []


async def test_concurrent_requests_all_complete(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    results = await asyncio.gather(*(gw.client.get(f"/items/{i}") for i in range(100)))
    assert [r.status_code for r in results] == [200] * 100
    assert sorted(orjson.loads(r.content)["path"] for r in results) == sorted(f"/items/{i}" for i in range(100))


@pytest.mark.parametrize("target", ["/items/%2e%2e/%2e%2e/admin", "/items/a%2fb", "/items/..;/x", "/items/%00"])
async def test_ambiguous_targets_never_reach_the_upstream(
    make_gateway: GatewayFactory, upstream: UpstreamServer, target: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    async with httpx.AsyncClient(base_url=gw.base_url) as client:
        r = await client.send(client.build_request("GET", httpx.URL(gw.base_url + target)))
    assert r.status_code == 400
    assert r.json()["code"] == "request.target_invalid"
    assert upstream.seen == []


async def test_absolute_form_target_naming_another_host_is_refused(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    refused = await raw_request(gw.port, b"GET http://internal.example/items/1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400")
    assert b"request.target_invalid" in refused
    assert upstream.seen == []
    same = await raw_request(gw.port, b"GET http://api.example.com/items/1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
    assert same.startswith(b"HTTP/1.1 200")
    assert upstream.seen[-1].raw_path == "/items/1"


async def test_a_streamed_upstream_response_reaches_the_client_whole(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    chunk = b"0123456789abcdef" * 4096  # 64 KiB

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(64):
            await response.write(chunk)
        await response.write_eof()
        return response

    upstream.responses["/files/big"] = stream
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    async with gw.client.stream("GET", "/files/big") as r:
        assert r.status_code == 200
        received = b"".join([part async for part in r.aiter_bytes()])
    assert received == chunk * 64
    (record,) = [rec for rec in await gw.audit_records() if rec["path"] == "/files/big"]
    assert record["bytes_out"] == len(chunk) * 64
