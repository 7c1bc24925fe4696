"""Attacks on the proxy door, and the legitimate traffic beside them.

Destinations are named through a fixed resolver (so a name can answer with the metadata address,
a private one, or change its answer between lookups: DNS rebinding) and reached on 127.0.0.1 only
through the routes' explicit 127.0.0.0/8 exception. Requests are raw bytes where a normal client
refuses to send them. Every refusal is a problem document with the request id, and nothing is
forwarded or dialled.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from tests.conftest import GatewayFactory, raw_connection, raw_request, read_response
from tests.proxy_kit import ProxyGateway as Lab
from tests.proxy_kit import proxy_gateway

from portcullis.testing import catch_all, serve_app


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"path": request.path_qs})


@pytest.fixture
async def upstream() -> AsyncIterator[int]:
    async with serve_app(catch_all(_ok)) as port:
        yield port


def _routes(port: int) -> list[dict[str, object]]:
    return [
        {"name": "plain", "url": f"http://plain.partner.test:{port}", "allow_http": True,
         "allow_networks": ["127.0.0.0/8"]},
        {"name": "ruled", "url": f"https://ruled.partner.test:{port}", "allow_networks": ["127.0.0.0/8"],
         "paths": ["/v1/**"], "methods": ["GET"]},
        {"name": "partner", "url": f"https://api.partner.test:{port}", "allow_networks": ["127.0.0.0/8"],
         "allow_hosts": ["metadata.partner.test", "intranet.partner.test", "mixed.partner.test",
                         "rebind.partner.test"]},
    ]


ANSWERS = {
    "plain.partner.test": [["127.0.0.1"]],
    "api.partner.test": [["127.0.0.1"]],
    "metadata.partner.test": [["169.254.169.254"]],  # a route's allow-listed name pointing at the metadata service
    "intranet.partner.test": [["10.0.0.7"]],
    "mixed.partner.test": [["127.0.0.1", "10.0.0.7"]],
    "rebind.partner.test": [["127.0.0.1"], ["10.0.0.7"]],  # public-looking first, private after
}


@pytest.fixture
async def lab(make_gateway: GatewayFactory, upstream: int) -> AsyncIterator[Lab]:
    limits = {"head_timeout": "500ms", "first_byte_timeout": "2s", "max_header_bytes": "4KiB"}
    async with proxy_gateway(make_gateway, _routes(upstream), answers=ANSWERS, proxy=limits) as lab:
        yield lab


def _problem(raw: bytes) -> tuple[int, dict[str, object], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"content-type: application/problem+json" in head.lower()
    doc = orjson.loads(body)
    assert doc["status"] == status
    assert f"x-request-id: {doc['request_id']}".encode() in head
    return status, doc, head


def _connect(lab: Lab, authority: str) -> bytes:
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: ".encode() + \
        lab.basic() + b"\r\n\r\n"


# --- tunnels to where they must not go ---------------------------------------------------------

@pytest.mark.parametrize(("authority", "decision"), [
    # OWASP SSRF cheat sheet: a permitted name resolving to the cloud metadata service.
    ("metadata.partner.test:{port}", "egress_refused:address_link_local"),
    ("intranet.partner.test:{port}", "egress_refused:address_private"),
    # One bad answer among good ones refuses the name (rebinding starts with a mixed answer).
    ("mixed.partner.test:{port}", "egress_refused:address_private"),
    # A port the route does not name (a tunnel to SSH on the API's host).
    ("api.partner.test:22", "egress_refused:unknown_route"),
    # An address literal instead of a name: no route names it.
    ("127.0.0.1:{port}", "egress_refused:unknown_route"),
    ("169.254.169.254:80", "egress_refused:unknown_route"),
    ("[::ffff:169.254.169.254]:443", "egress_refused:unknown_route"),  # IPv4-mapped metadata address
    # A route that allows some paths and methods only: an unread tunnel would carry any call.
    ("ruled.partner.test:{port}", "egress_refused:tunnel_bypasses_route_rules"),
], ids=["metadata-ip-via-name", "rfc1918-via-name", "mixed-answer", "port-not-allowed", "loopback-literal",
        "metadata-literal", "mapped-v6-metadata", "route-with-path-rules"])
async def test_a_tunnel_to_a_forbidden_destination_is_refused_and_audited(
    lab: Lab, upstream: int, authority: str, decision: str,
) -> None:
    target = authority.format(port=upstream)
    status, doc, _ = _problem(await raw_request(lab.port, _connect(lab, target)))
    assert (status, doc["code"]) == (403, "egress.destination_denied")
    record = await lab.tunnel()
    assert record.egress is not None
    assert (record.status, record.decision, record.request_id, record.egress["address"]) == (
        403, decision, doc["request_id"], None)


async def test_a_rebinding_name_is_dialled_at_the_address_that_was_checked(lab: Lab, upstream: int) -> None:
    # The second answer (10.0.0.7) is what a rebinding DNS server gives a client that resolves again.
    async with raw_connection(lab.port) as (reader, writer):
        writer.write(_connect(lab, f"rebind.partner.test:{upstream}"))
        status, _, _ = await read_response(reader)
        assert status == 200
        writer.write(b"GET /through HTTP/1.1\r\nHost: rebind.partner.test\r\nConnection: close\r\n\r\n")
        inner, _, body = await read_response(reader)
        assert (inner, orjson.loads(body)) == (200, {"path": "/through"})
    record = await lab.tunnel()
    assert record.egress is not None and record.egress["address"] == "127.0.0.1"
    assert lab.resolver.lookups == ["rebind.partner.test"]


@pytest.mark.parametrize("target", [
    b"user@api.partner.test:443",  # userinfo: authority-form has none (RFC 9110 section 9.3.6)
    b"api.partner.test",  # no port
    b"api.partner.test:0",
    b"api.partner.test:99999",
    b"0177.0.0.1:443",  # octal loopback
    b"2130706433:443",  # decimal loopback
    b"api.partner.test:443/path",
    b"http://api.partner.test:443",
], ids=["userinfo", "no-port", "port-0", "port-too-big", "octal-ip", "decimal-ip", "path",
        "absolute-url"])
async def test_a_malformed_connect_target_is_refused_before_authentication(lab: Lab, target: bytes) -> None:
    raw = await raw_request(lab.port, b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, doc, _ = _problem(raw)
    assert (status, doc["code"]) == (400, "request.target_invalid")
    record = await lab.tunnel()
    assert record.consumer_id is None  # refused before any key lookup
    assert record.decision.startswith("invalid_request:")


async def test_a_connect_without_credentials_gets_407_and_no_lookup(lab: Lab, upstream: int) -> None:
    raw = await raw_request(lab.port, f"CONNECT api.partner.test:{upstream} HTTP/1.1\r\n\r\n".encode())
    status, doc, head = _problem(raw)
    assert (status, doc["code"]) == (407, "proxy.missing_credentials")
    assert b'proxy-authenticate: Basic realm="portcullis egress"' in head
    record = await lab.tunnel()
    assert (record.decision, record.status) == ("auth:proxy_credentials_missing", 407)
    assert lab.resolver.lookups == []


@pytest.mark.parametrize(("credentials", "reason"), [
    (b"Basic !!!", "proxy_credentials_malformed"),
    (b"Basic d2Y9YTtleD1iOg==", "proxy_credentials_malformed"),  # "wf=a;ex=b:" (no key)
    (b"Basic YWxpY2U6cGNsX3g=", "proxy_context_malformed"),  # "alice:pcl_x": user name not the context form
    (b"Digest username=x", "proxy_scheme_unsupported"),
    (b"Bearer pcl_aaaaaaaaaaaa_" + b"A" * 43, "proxy_context_missing"),  # Bearer without X-Workflow-Id
], ids=["bad-base64", "no-password", "not-context", "digest", "bearer-no-context"])
async def test_bad_proxy_credentials_get_407(lab: Lab, upstream: int, credentials: bytes, reason: str) -> None:
    raw = await raw_request(lab.port, f"CONNECT api.partner.test:{upstream} HTTP/1.1\r\n".encode()
                            + b"Proxy-Authorization: " + credentials + b"\r\n\r\n")
    status, doc, _ = _problem(raw)
    assert (status, doc["code"]) == (407, "proxy.invalid_credentials")
    assert (await lab.tunnel()).decision == f"auth:{reason}"


async def test_a_bearer_key_with_context_headers_opens_the_tunnel(lab: Lab, upstream: int) -> None:
    head = (f"CONNECT api.partner.test:{upstream} HTTP/1.1\r\nProxy-Authorization: Bearer {lab.key}\r\n"
            "X-Workflow-Id: wf:nightly\r\nX-Execution-Id: run-7\r\n\r\n").encode()
    async with raw_connection(lab.port) as (reader, writer):
        writer.write(head)
        status, _, _ = await read_response(reader)
        assert status == 200
    record = await lab.tunnel()
    assert record.egress is not None and record.consumer_id == "alice"
    assert (record.egress["workflow_id"], record.egress["execution_id"]) == ("wf:nightly", "run-7")


# --- absolute-form confusion -------------------------------------------------------------------

@pytest.mark.parametrize(("target", "host"), [
    ("http://plain.partner.test:{port}@evil.test/", "evil.test"),  # userinfo: which host is it?
    ("http://evil.test\\@plain.partner.test:{port}/", "plain.partner.test:{port}"),  # backslash
    ("http://plain.partner.test:{port}/", "evil.test"),  # Host names another server than the target
    ("http://0177.0.0.1:{port}/", "0177.0.0.1:{port}"),  # octal loopback
    ("http://plain.partner.test:{port}/#frag", "plain.partner.test:{port}"),
    ("ftp://plain.partner.test:{port}/", "plain.partner.test:{port}"),
    ("/origin-form", "plain.partner.test:{port}"),  # a server request sent to the proxy
], ids=["userinfo", "backslash", "host-mismatch", "octal-ip", "fragment", "ftp", "origin-form"])
async def test_a_confusing_absolute_form_target_is_refused(lab: Lab, upstream: int, target: str, host: str) -> None:
    request = (f"GET {target.format(port=upstream)} HTTP/1.1\r\nHost: {host.format(port=upstream)}\r\n"
               "Proxy-Authorization: ").encode() + lab.basic() + b"\r\n\r\n"
    status, doc, _ = _problem(await raw_request(lab.port, request))
    assert (status, doc["code"]) == (400, "request.target_invalid")
    assert lab.calls == []
    assert lab.resolver.lookups == []


async def test_an_absolute_form_url_no_route_covers_is_refused_403(lab: Lab, upstream: int) -> None:
    request = (f"GET http://other.partner.test:{upstream}/ HTTP/1.1\r\nHost: other.partner.test:{upstream}\r\n"
               "Proxy-Authorization: ").encode() + lab.basic() + b"\r\n\r\n"
    status, doc, _ = _problem(await raw_request(lab.port, request))
    assert (status, doc["code"]) == (403, "egress.destination_denied")
    [call] = lab.calls
    assert call.decision == "egress_refused:unknown_route"


# --- request smuggling through the proxy -------------------------------------------------------

@pytest.mark.parametrize("framing", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",  # CL.TE (RFC 9112 section 6.3)
    b"Transfer-Encoding: xchunked\r\n",  # TE obfuscation (CVE-2019-18277 style)
    b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",  # TE.TE
    b"Content-Length: 5\r\nContent-Length: 6\r\n",  # duplicate CL
    b"Content-Length: +5\r\n",
], ids=["cl-te", "te-obfuscated", "te-te", "cl-cl", "cl-signed"])
async def test_ambiguous_framing_is_refused_and_nothing_is_forwarded(lab: Lab, upstream: int, framing: bytes) -> None:
    request = (f"POST http://plain.partner.test:{upstream}/ HTTP/1.1\r\nHost: plain.partner.test:{upstream}\r\n"
               .encode() + b"Proxy-Authorization: " + lab.basic() + b"\r\n" + framing +
               b"\r\n0\r\n\r\nGET http://plain.partner.test/smuggled HTTP/1.1\r\nHost: plain.partner.test\r\n\r\n")
    raw = await raw_request(lab.port, request)
    status, doc, head = _problem(raw)
    assert (status, doc["code"]) == (400, "request.malformed")
    assert b"connection: close" in head
    assert lab.calls == []


async def test_bare_lf_line_endings_are_refused(lab: Lab, upstream: int) -> None:
    raw = await raw_request(lab.port, f"GET http://plain.partner.test:{upstream}/ HTTP/1.1\nHost: x\n\n".encode())
    assert _problem(raw)[0] == 400


async def test_pipelined_requests_are_answered_in_order(lab: Lab, upstream: int) -> None:
    one = (f"GET http://plain.partner.test:{upstream}/one HTTP/1.1\r\nHost: plain.partner.test:{upstream}\r\n"
           "Proxy-Authorization: ").encode() + lab.basic() + b"\r\n\r\n"
    two = one.replace(b"/one", b"/two")
    async with raw_connection(lab.port) as (reader, writer):
        writer.write(one + two)
        first = await read_response(reader)
        second = await read_response(reader)
    assert [orjson.loads(first[2]), orjson.loads(second[2])] == [{"path": "/one"}, {"path": "/two"}]


# --- bounds --------------------------------------------------------------------------------------

async def test_an_oversized_head_is_cut_with_431(lab: Lab) -> None:
    raw = await raw_request(lab.port, b"GET http://plain.partner.test/ HTTP/1.1\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    status, doc, _ = _problem(raw)
    assert (status, doc["code"]) == (431, "request.headers_too_large")
    assert lab.refusals[0].decision == "invalid_request:head_too_large"


async def test_a_slow_head_is_cut_with_408(lab: Lab) -> None:
    async with raw_connection(lab.port) as (reader, writer):
        writer.write(b"GET http://plain.partner.test/ HTTP/1.1\r\nX-Slow: ")  # and nothing more
        async with asyncio.timeout(5):
            raw = await reader.read()
    status, doc, _ = _problem(raw)
    assert (status, doc["code"]) == (408, "request.timeout")
    assert lab.refusals[0].decision == "server_timeout:head_timeout"


async def test_a_tunnel_client_that_never_reads_holds_bounded_memory_and_is_cut_when_idle(
    make_gateway: GatewayFactory,
) -> None:
    written = 0
    blocked = asyncio.Event()

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        chunk = b"x" * 65536
        try:
            while True:
                writer.write(chunk)
                try:
                    async with asyncio.timeout(0.2):
                        await writer.drain()
                except TimeoutError:
                    blocked.set()  # the gateway stopped reading: backpressure reached us
                    await writer.drain()
                written += len(chunk)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(firehose, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    route = {"name": "bulk", "url": f"https://bulk.partner.test:{port}", "allow_networks": ["127.0.0.0/8"]}
    try:
        async with proxy_gateway(make_gateway, [route], answers={"bulk.partner.test": [["127.0.0.1"]]},
                                 proxy={"tunnel_idle_timeout": "1s"}) as lab:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", lab.port))
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(_connect(lab, f"bulk.partner.test:{port}"))
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            # ... and never read again.
            record = await lab.tunnel()
            writer.transport.abort()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    assert blocked.is_set()
    assert record.egress is not None and record.egress["ended"] == "idle_timeout"
    # What the gateway took from the upstream is what the client's socket and the gateway's bounded
    # buffers hold, never the firehose: a few hundred KiB on loopback, far from unbounded.
    assert record.bytes_out < 8 * 1024 * 1024


# --- a tunnel to a plain-http route is read, never spliced ---------------------------------------

async def test_a_tunnel_to_an_http_route_reads_each_request_through_the_pipeline(lab: Lab, upstream: int) -> None:
    async with raw_connection(lab.port) as (reader, writer):
        writer.write(_connect(lab, f"plain.partner.test:{upstream}"))
        assert (await read_response(reader))[0] == 200
        writer.write(f"GET /inside HTTP/1.1\r\nHost: plain.partner.test:{upstream}\r\n\r\n".encode())
        status, _, body = await read_response(reader)
        assert (status, orjson.loads(body)) == (200, {"path": "/inside"})
    record = await lab.tunnel()
    assert record.egress is not None
    assert (record.egress["mode"], record.egress["requests"], record.egress["address"]) == ("read", 1, None)
    assert [(c.path, c.decision) for c in lab.calls] == [("/plain/inside", "allowed")]  # through the pipeline


@pytest.mark.parametrize("inside", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello: opaque bytes are never passed on
    b"GET /x HTTP/1.1\r\nHost: intranet.partner.test\r\n\r\n",  # another host than the tunnel's
    b"GET http://intranet.partner.test/x HTTP/1.1\r\nHost: intranet.partner.test\r\n\r\n",  # absolute-form inside
    b"POST /x HTTP/1.1\r\nHost: plain.partner.test:{port}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
], ids=["tls-bytes", "other-host", "absolute-inside", "cl-te-inside"])
async def test_what_a_read_tunnel_cannot_read_as_one_request_to_its_host_is_refused(
    lab: Lab, upstream: int, inside: bytes,
) -> None:
    async with raw_connection(lab.port) as (reader, writer):
        writer.write(_connect(lab, f"plain.partner.test:{upstream}"))
        assert (await read_response(reader))[0] == 200
        writer.write(inside.replace(b"{port}", str(upstream).encode()))
        async with asyncio.timeout(5):
            raw = await reader.read()
    status, doc, _ = _problem(raw)
    assert (status, doc["code"]) in ((400, "request.malformed"), (400, "request.target_invalid"))
    assert lab.calls == []


async def test_user_info_in_a_refused_target_never_reaches_the_audit(lab: Lab, upstream: int) -> None:
    request = (f"GET http://agent:hunter2@plain.partner.test:{upstream}/ HTTP/1.1\r\n"
               f"Host: plain.partner.test:{upstream}\r\nProxy-Authorization: ").encode() + lab.basic() + b"\r\n\r\n"
    status, doc, _ = _problem(await raw_request(lab.port, request))
    assert (status, doc["code"]) == (400, "request.target_invalid")
    [refusal] = lab.refusals
    assert refusal.path == f"http://***@plain.partner.test:{upstream}/"
    assert not any("hunter2" in str(r) for r in await lab.gw.audit_records())


async def test_guessing_keys_through_the_door_is_cut_by_the_failed_authentication_shield(
    make_gateway: GatewayFactory, upstream: int,
) -> None:
    # OWASP API2 (broken authentication): credential stuffing, here through Proxy-Authorization.
    async with proxy_gateway(make_gateway, _routes(upstream), answers=ANSWERS,
                             extra_yaml="shield: {failed_auth_rate: 2/minute}\n") as lab:
        target = f"api.partner.test:{upstream}"
        answers = []
        for key in ("pcl_aaaaaaaaaaaa_" + "A" * 43, "pcl_bbbbbbbbbbbb_" + "B" * 43, "pcl_cccccccccccc_" + "C" * 43,
                    lab.key):  # the last guess is right: it must not answer differently
            raw = await raw_request(lab.port, f"CONNECT {target} HTTP/1.1\r\nProxy-Authorization: ".encode()
                                    + lab.basic(key=key) + b"\r\n\r\n")
            status, doc, head = _problem(raw)
            answers.append((status, doc["code"], b"retry-after" in head))
        decisions = [(await lab.tunnel()).decision for _ in answers]
    assert answers == [(407, "proxy.invalid_credentials", False), (407, "proxy.invalid_credentials", False),
                       (429, "limit.exceeded", True), (429, "limit.exceeded", True)]
    assert decisions == ["auth:unknown_key", "auth:unknown_key", "auth:failed_auth_limited",
                         "auth:failed_auth_limited"]


async def test_a_busy_tunnel_is_still_cut_at_its_maximum_duration(make_gateway: GatewayFactory) -> None:
    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    route = {"name": "sink", "url": f"https://sink.partner.test:{port}", "allow_networks": ["127.0.0.0/8"]}
    try:
        async with proxy_gateway(make_gateway, [route], answers={"sink.partner.test": [["127.0.0.1"]]},
                                 proxy={"tunnel_max_duration": "1s", "tunnel_idle_timeout": "60s"}) as lab, \
                raw_connection(lab.port) as (reader, writer):
            writer.write(_connect(lab, f"sink.partner.test:{port}"))
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(10):
                    while not reader.at_eof():  # never idle: bytes keep moving until the gateway cuts
                        writer.write(b"x" * 16384)
                        await writer.drain()
            record = await lab.tunnel()
    finally:
        server.close()
    assert record.egress is not None and record.egress["ended"] == "max_duration"
    assert record.bytes_in > 0
