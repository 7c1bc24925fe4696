"""Client headers that make a backend route, act or trust differently never reach it.

Sources, per family (ids name them):
- underscore and case variants of the gateway's own headers: oauth2-proxy GHSA-vjrc-mh2v-45x6
  (CVE-2025-64484), Traefik "Headers with Underscores", nginx ``underscores_in_headers``, Envoy
  ``headers_with_underscores_action``, gunicorn 22's refusal of ``_`` names; CGI RFC 3875 4.1.18;
- URL override: Symfony CVE-2018-14773, PortSwigger "Request URL override", oauth2-proxy
  GHSA-7x63-xv5r-3p2x (X-Forwarded-Uri);
- method override: OWASP WSTG-CONF-06, Fortify "Often Misused: HTTP Method Override";
- forwarding hints: PortSwigger "Cracking the lens" (2017) and "Practical Web Cache Poisoning" (2018);
- other gateways' identity: Kong upstream headers, Envoy "HTTP header sanitizing", oauth2-proxy
  upstream headers, Istio XFCC, Grafana auth proxy, Azure App Service EasyAuth.
Framing (RFC 9112 sections 3.2, 6.1, 6.3) is sent on raw sockets, since clients refuse to send it.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from tests.attacks.header_cases import DEFAULT_REMOVED, GATEWAY_HEADER_VARIANTS, LEGITIMATE
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml, raw_request

from portcullis.testing import RecordingUpstream

ROUTES = """
routes:
  - {name: orders, path: "/orders/{order_id}", methods: [GET, POST], upstream: api,
     authorize: {scopes_all: ["orders:read"]}}
  - {name: open, path: "/open", methods: [GET, POST], upstream: api, auth: none}
"""


async def _get_orders(make_gateway: GatewayFactory, upstream: UpstreamServer, headers: list[tuple[str, str]],
                      yaml: str = ROUTES) -> tuple[int, str]:
    gw = await make_gateway(gateway_yaml(upstream.url, yaml))
    key = await gw.key("alice", ("orders:read",))
    r = await gw.client.get("/orders/1", headers=[("X-API-Key", key), *headers])
    return r.status_code, r.headers["x-request-id"]


@pytest.mark.parametrize(("variant", "own"), GATEWAY_HEADER_VARIANTS)
async def test_variants_of_the_gateways_own_headers_are_removed(
    make_gateway: GatewayFactory, upstream: UpstreamServer, variant: str, own: str
) -> None:
    status, request_id = await _get_orders(make_gateway, upstream, [(variant, "forged")])
    assert status == 200
    seen = upstream.seen[-1]
    assert seen.header(variant) is None
    assert "forged" not in [v for _, v in seen.headers]
    expected = {"x-consumer-id": "alice", "x-consumer-scopes": "orders:read", "x-key-id": None,
                "x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http", "x-request-id": request_id}[own]
    if expected is None:
        assert len(seen.all(own)) == 1  # the gateway's own value, once
    else:
        assert seen.all(own) == [expected]


@pytest.mark.parametrize(("header", "value"), DEFAULT_REMOVED)
async def test_default_list_headers_never_reach_the_backend(
    make_gateway: GatewayFactory, upstream: UpstreamServer, header: str, value: str
) -> None:
    status, _ = await _get_orders(make_gateway, upstream, [(header, value)])
    assert status == 200
    seen = upstream.seen[-1]
    assert seen.header(header) is None
    assert seen.header(header.replace("_", "-")) is None
    assert (seen.method, seen.raw_path) == ("GET", "/orders/1")
    assert seen.all("x-consumer-id") == ["alice"]


@pytest.mark.parametrize(("header", "value"), LEGITIMATE)
async def test_ordinary_headers_still_reach_the_backend(
    make_gateway: GatewayFactory, upstream: UpstreamServer, header: str, value: str
) -> None:
    status, _ = await _get_orders(make_gateway, upstream, [(header, value)])
    assert status == 200
    assert upstream.seen[-1].all(header) == [value]


async def test_a_trusted_proxys_request_id_and_chain_still_pass(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    yaml = "trusted_proxies: [127.0.0.1/32]\n" + ROUTES
    status, request_id = await _get_orders(
        make_gateway, upstream, [("X-Request-ID", "lb-7f3a9"), ("X-Forwarded-For", "198.51.100.7"),
                                 ("X_Forwarded_For", "10.0.0.1")], yaml)
    assert (status, request_id) == (200, "lb-7f3a9")
    seen = upstream.seen[-1]
    assert seen.all("x-request-id") == ["lb-7f3a9"]
    # The exact name carries the trusted chain; the underscore variant is not part of it.
    assert seen.all("x-forwarded-for") == ["198.51.100.7, 127.0.0.1"]


KEEP = """
request:
  remove_headers: [x-tenant-*]
routes:
  - name: legacy
    path: "/legacy"
    upstream: api
    auth: none
    request: {keep_headers: [x-http-method-override, x-tenant-region], remove_headers: [x-debug]}
  - {name: open, path: "/open", upstream: api, auth: none}
"""


async def test_a_route_keeps_a_default_removed_header_it_needs(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, KEEP, keys=False))
    headers = {"X-HTTP-Method-Override": "PATCH", "X-Tenant-Region": "eu", "X-Tenant-Id": "t1", "X-Debug": "1"}
    assert (await gw.client.get("/legacy", headers=headers)).status_code == 200
    seen = upstream.seen[-1]
    assert seen.all("x-http-method-override") == ["PATCH"]
    assert seen.all("x-tenant-region") == ["eu"]
    assert seen.header("x-tenant-id") is None  # the global prefix still applies
    assert seen.header("x-debug") is None  # the route's own list
    assert (await gw.client.get("/open", headers=headers)).status_code == 200
    other = upstream.seen[-1]
    assert other.header("x-http-method-override") is None
    assert other.header("x-tenant-region") is None
    assert other.all("x-debug") == ["1"]


REJECT = """
request:
  reject_headers: [x-http-method-override, x-consumer-id]
routes:
  - name: orders
    path: "/orders/{order_id}"
    methods: [GET, POST]
    upstream: api
    request: {reject_headers: [x-original-url, x-envoy-*]}
  - name: legacy
    path: "/legacy"
    upstream: api
    auth: none
    request: {keep_headers: [x-http-method-override]}
"""

REFUSED = [
    pytest.param("X-HTTP-Method-Override", "DELETE", "method_override", id="OWASP-WSTG-CONF-06-refused"),
    pytest.param("X_HTTP_Method_Override", "DELETE", "method_override", id="OWASP-WSTG-CONF-06-variant-refused"),
    pytest.param("X-Original-URL", "/admin", "url_override", id="CVE-2018-14773-refused"),
    pytest.param("X-Envoy-Internal", "true", "foreign_identity", id="envoy-header-sanitizing-prefix-refused"),
    pytest.param("X_Consumer_Id", "admin", "gateway_set", id="GHSA-vjrc-mh2v-45x6-refused-when-configured"),
]


@pytest.mark.parametrize(("header", "value", "family"), REFUSED)
async def test_reject_headers_refuse_with_a_problem_document_and_forward_nothing(
    make_gateway: GatewayFactory, upstream: UpstreamServer, header: str, value: str, family: str
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, REJECT))
    key = await gw.key("alice")
    r = await gw.client.post("/orders/1", headers={"X-API-Key": key, header: value}, content=b"{}")
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json() == {"type": r.json()["type"], "title": "Malformed request.", "status": 400,
                        "code": "request.malformed", "request_id": r.headers["x-request-id"]}
    assert upstream.seen == []
    records = await gw.audit_records()
    assert records[-1]["decision"] == f"invalid_request:rejected_header:{family}"
    assert records[-1]["request_id"] == r.headers["x-request-id"]


async def test_a_route_keeping_a_globally_refused_header_forwards_it(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, REJECT))
    r = await gw.client.get("/legacy", headers={"X-HTTP-Method-Override": "PATCH"})
    assert r.status_code == 200
    assert upstream.seen[-1].all("x-http-method-override") == ["PATCH"]


# --- framing, on raw sockets ----------------------------------------------------------------------

async def _exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Everything the gateway sends back, and whether it then closed the connection (within 5 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                received += chunk
        return received, True
    except TimeoutError:
        return received, False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


FRAMING = [
    pytest.param(b"GET /open HTTP/1.1\r\nX-A: b\r\n\r\n", "missing_host", id="RFC9112-3.2-http11-without-host"),
    pytest.param(b"POST /open HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 "te_in_http10", id="RFC9112-6.1-te-in-http10"),
    pytest.param(b"POST /open HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
                 "te_not_chunked", id="RFC9112-6.1-stacked-codings-gzip-chunked"),
]


@pytest.mark.parametrize(("payload", "reason"), FRAMING)
async def test_bad_framing_is_refused_audited_and_the_connection_closed(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream, payload: bytes, reason: str
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, ROUTES))
    response, closed = await _exchange(gw.port, payload)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0] == b"HTTP/1.1 400 Bad Request", head
    assert b"content-type: application/problem+json" in head
    assert b"connection: close" in head
    assert b'"code":"request.malformed"' in body
    assert closed
    assert recording_upstream.heads == []
    records = await gw.audit_records()
    assert records[-1]["decision"] == f"invalid_request:{reason}"


# Refused by the gateway before forwarding, and by llhttp when it reads on: whichever answers first,
# the client gets 400 and a closed connection, and the backend nothing. (Until issue "The front
# door", llhttp's answer is uvicorn's plain text rather than a problem document.)
OBFUSCATED_CODINGS = [
    pytest.param(b"POST /open HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
                 id="RFC9112-6.1-te-in-http10-with-content-length"),
    pytest.param(b"POST /open HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
                 id="portswigger-TE.TE-chunked-twice-in-one-field"),
    pytest.param(b"POST /open HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
                 id="RFC9112-6.3-identity-coding"),
    pytest.param(b"POST /open HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
                 id="CVE-2019-18277-te-obfuscation"),
    pytest.param(b"POST /open HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
                 id="RFC9112-6.3-chunked-not-final"),
]


@pytest.mark.parametrize("payload", OBFUSCATED_CODINGS)
async def test_codings_other_than_chunked_are_refused_and_never_forwarded(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream, payload: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, ROUTES))
    response, closed = await _exchange(gw.port, payload)
    assert response.split(b"\r\n", 1)[0] == b"HTTP/1.1 400 Bad Request", response[:80]
    assert closed
    follow_up = await raw_request(gw.port, b"GET /open?follow-up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert follow_up.startswith(b"HTTP/1.1 200")
    assert [h.target for h in recording_upstream.heads] == ["/open?follow-up"]


@pytest.mark.parametrize("payload", [
    pytest.param(b"GET /open HTTP/1.1\r\nHost: a\r\nX-Consumer-Id : admin\r\n\r\n", id="CVE-2020-7238-space-before-colon"),
    pytest.param(b"GET /open HTTP/1.1\r\nHost: a\r\nX_Consumer_Id\t: admin\r\n\r\n", id="CVE-2020-7238-tab-before-colon"),
    pytest.param(b"GET /open HTTP/1.1\r\nHost: a\r\nX-A: b\r\n X-Consumer-Id: admin\r\n\r\n", id="RFC9112-5.2-obs-fold-leading-space"),
])
async def test_names_with_surrounding_whitespace_are_refused_by_the_parser(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream, payload: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, ROUTES))
    response = await raw_request(gw.port, payload)
    assert response == b"" or response.startswith(b"HTTP/1.1 400"), response[:80]
    assert recording_upstream.heads == []


LEGITIMATE_FRAMING = [
    pytest.param(b"POST /open HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                 id="RFC9112-7.1-chunked"),
    pytest.param(b"POST /open HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                 id="RFC9112-7-coding-names-are-case-insensitive"),
    pytest.param(b"GET /open HTTP/1.0\r\n\r\n", id="RFC9112-3.2-http10-may-omit-host"),
    pytest.param(b"POST /open HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", id="http10-content-length"),
]


@pytest.mark.parametrize("payload", LEGITIMATE_FRAMING)
async def test_well_framed_requests_are_forwarded(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream, payload: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, ROUTES))
    response = await raw_request(gw.port, payload)
    assert response.split(b" ", 2)[1] == b"200", response[:80]
    assert len(recording_upstream.heads) == 1
