"""Ambiguous HTTP/1.1 framing must be refused with 400, and nothing may reach the upstream.

Sources: RFC 9112 section 6.3 (message body length), PortSwigger "HTTP request smuggling"
(CL.TE, TE.CL, TE.TE obfuscation), CVE-2019-18277 (HAProxy TE obfuscation), CVE-2020-7238 (Netty
whitespace before colon), CVE-2023-25690 (Apache mod_proxy CRLF in the target).
"""

from __future__ import annotations

import pytest
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml, raw_request

PUBLIC = """
routes:
  - {name: echo, path: "/echo", methods: [GET, POST], upstream: api, auth: none}
"""

ATTACKS = [
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                 id="portswigger-CL.TE"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
                 id="portswigger-TE.CL"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                 id="RFC9112-6.3-duplicate-content-length"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!",
                 id="RFC9112-6.3-list-content-length"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
                 id="content-length-with-sign"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
                 id="CVE-2019-18277-te-obfuscation"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
                 id="CVE-2020-7238-space-before-colon"),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
                 id="portswigger-TE.TE-duplicate"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n",
                 id="RFC9112-5.2-obs-fold"),
    pytest.param(b"GET /echo HTTP/1.1\nHost: a\n\n", id="bare-LF-line-endings"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", id="RFC9112-3.2-duplicate-host"),
    pytest.param(b"GET /echo\r\nX: y HTTP/1.1\r\nHost: a\r\n\r\n", id="http09-request-line-followed-by-headers"),
    pytest.param(b"GET /echo HTTP/2.0\r\nHost: a\r\n\r\n", id="http2-version-on-an-http1-connection"),
    pytest.param(b"GET /echo%0d%0aX-Injected:%20y HTTP/1.1\r\nHost: a\r\n\r\n", id="CVE-2023-25690-encoded-crlf-in-target"),
    pytest.param(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Bad\x00: v\r\n\r\n", id="nul-in-header-name"),
]


@pytest.mark.parametrize("payload", ATTACKS)
async def test_ambiguous_framing_is_refused_and_never_forwarded(
    make_gateway: GatewayFactory, upstream: UpstreamServer, payload: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    response = await raw_request(gw.port, payload)
    status_line = response.split(b"\r\n", 1)[0]
    assert response == b"" or status_line.startswith(b"HTTP/1.1 400"), status_line
    assert upstream.seen == []


async def test_legitimate_chunked_body_is_forwarded(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    payload = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    response = await raw_request(gw.port, payload)
    assert response.startswith(b"HTTP/1.1 200")
    assert upstream.seen[-1].body == b"hello world"


async def test_legitimate_content_length_body_is_forwarded(
    make_gateway: GatewayFactory, upstream: UpstreamServer
) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, PUBLIC))
    response = await raw_request(gw.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert response.startswith(b"HTTP/1.1 200")
    assert upstream.seen[-1].body == b"hello"


async def test_oversized_headers_get_431(make_gateway: GatewayFactory, upstream: UpstreamServer) -> None:
    gw = await make_gateway(gateway_yaml(upstream.url, "listen: {host: 127.0.0.1, port: 0, max_header_bytes: 4KiB}\n" + PUBLIC)
                            .replace("listen: {host: 127.0.0.1, port: 0}\n", "", 1))
    r = await gw.client.get("/echo", headers={"X-Big": "a" * 6000})
    assert r.status_code == 431
    assert r.json()["code"] == "request.headers_too_large"
    assert upstream.seen == []
