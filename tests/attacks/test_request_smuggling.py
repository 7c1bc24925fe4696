"""Ambiguous HTTP/1.1 framing must be refused with 400, and nothing may reach the upstream.

"Nothing" is checked by a backend that records each request head the moment it arrives, before
it reads a byte of the body, so a head forwarded ahead of a body the gateway then refuses counts.

Sources: RFC 9112 section 6.3 (message body length), PortSwigger "HTTP request smuggling"
(CL.TE, TE.CL, TE.TE obfuscation), CVE-2019-18277 (HAProxy TE obfuscation), CVE-2020-7238 (Netty
whitespace before colon), CVE-2023-25690 (Apache mod_proxy CRLF in the target).
"""

from __future__ import annotations

import pytest
from tests.conftest import ON_PORTCULLIS, GatewayFactory, gateway_yaml, raw_request

from portcullis.testing import RecordingUpstream

PUBLIC = """
routes:
  - {name: echo, path: "/echo", methods: [GET, POST], upstream: api, auth: none}
"""

# Issue "The front door" fixes this: the gateway starts forwarding as soon as llhttp has parsed a
# head, so when the body's framing then fails, uvicorn answers its own 400 but the backend has
# already received the head (audited as a 499). Strict, so the fix shows up as an XPASS to remove.
FRONT_DOOR = pytest.mark.xfail(not ON_PORTCULLIS, strict=True, raises=AssertionError, reason=(
    'issue "The front door": a request head is forwarded before its body framing is known to be good'))

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


# A well-framed head followed by a body that breaks the framing: the head alone must not be
# forwarded either, or a backend acts on a request whose body the gateway refused.
BODY_ATTACKS = [
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
                 id="RFC9112-7.1-invalid-chunk-size", marks=FRONT_DOOR),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
                 id="RFC9112-7.1-chunk-longer-than-its-size", marks=FRONT_DOOR),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
                 id="RFC9112-7.1-bare-LF-in-chunked-body", marks=FRONT_DOOR),
    pytest.param(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
                 id="CVE-2018-7159-chunk-size-overflow", marks=FRONT_DOOR),
]


async def _forwarded_heads(gw_port: int, upstream: RecordingUpstream) -> list[str]:
    """The targets that reached the upstream, once a later request has made the round trip.

    The refusal can reach the client before the backend has read a head forwarded just before
    it; a follow-up request answered through the same backend orders the two without sleeping.
    """
    follow_up = await raw_request(gw_port, b"GET /echo?follow-up HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert follow_up.startswith(b"HTTP/1.1 200")
    return [head.target for head in upstream.heads if head.target != "/echo?follow-up"]


@pytest.mark.parametrize("payload", ATTACKS + BODY_ATTACKS)
async def test_ambiguous_framing_is_refused_and_never_forwarded(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream, payload: bytes
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, PUBLIC))
    response = await raw_request(gw.port, payload)
    status_line = response.split(b"\r\n", 1)[0]
    assert response == b"" or status_line.startswith(b"HTTP/1.1 400"), status_line
    assert await _forwarded_heads(gw.port, recording_upstream) == []


async def test_legitimate_chunked_body_is_forwarded(make_gateway: GatewayFactory, recording_upstream: RecordingUpstream) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, PUBLIC))
    payload = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    response = await raw_request(gw.port, payload)
    assert response.startswith(b"HTTP/1.1 200")
    assert recording_upstream.bodies[-1] == b"hello world"


async def test_legitimate_content_length_body_is_forwarded(
    make_gateway: GatewayFactory, recording_upstream: RecordingUpstream
) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, PUBLIC))
    response = await raw_request(gw.port, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello")
    assert response.startswith(b"HTTP/1.1 200")
    assert recording_upstream.bodies[-1] == b"hello"


async def test_oversized_headers_get_431(make_gateway: GatewayFactory, recording_upstream: RecordingUpstream) -> None:
    gw = await make_gateway(gateway_yaml(recording_upstream.url, "listen: {host: 127.0.0.1, port: 0, max_header_bytes: 4KiB}\n" + PUBLIC)
                            .replace("listen: {host: 127.0.0.1, port: 0}\n", "", 1))
    r = await gw.client.get("/echo", headers={"X-Big": "a" * 6000})
    assert r.status_code == 431
    assert r.json()["code"] == "request.headers_too_large"
    assert recording_upstream.heads == []
