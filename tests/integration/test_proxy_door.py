"""The proxy door end to end: real clients (httpx) through a proxy listener on 127.0.0.1 to real upstreams.

The backend is the lab backend of ``tests/proxy_kit.py`` (the API key verifier, the route table,
the SSRF guard with a fixed resolver, the egress executor). Upstreams are real aiohttp servers on
127.0.0.1, plain and TLS (a throwaway CA the client trusts), reachable only through the routes'
127.0.0.0/8 network exceptions.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from tests.conftest import issue_tls_files, raw_connection, raw_request, read_response
from tests.proxy_kit import proxy_lab

from portcullis.egress.proxy.authority import CertificateAuthority, create_ca
from portcullis.errors import Forbidden, UpstreamTimeout
from portcullis.server.limits import ServerLimits
from portcullis.testing import ManualClock, catch_all, serve_app


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"path": request.path_qs, "method": request.method, "host": request.headers.get("Host"),
                              "body": body.decode(), "proxy_auth": request.headers.get("Proxy-Authorization"),
                              "workflow": request.headers.get("X-Workflow-Id")})


@pytest.fixture
async def plain_upstream() -> AsyncIterator[int]:
    async with serve_app(catch_all(_echo)) as port:
        yield port


@pytest.fixture
async def tls_upstream(tmp_path: Path) -> AsyncIterator[tuple[int, ssl.SSLContext]]:
    files = await asyncio.to_thread(issue_tls_files, tmp_path, names=("api.partner.test",))

    def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(files.cert, files.key)
        return server, files.client_context()

    server, client = await asyncio.to_thread(contexts)
    async with serve_app(catch_all(_echo), ssl_context=server) as port:
        yield port, client


def _plain_route(port: int, **extra: object) -> dict[str, object]:
    return {"name": "plain", "url": f"http://plain.partner.test:{port}", "allow_http": True,
            "allow_networks": ["127.0.0.0/8"], **extra}


def _tls_route(port: int, **extra: object) -> dict[str, object]:
    return {"name": "partner", "url": f"https://api.partner.test:{port}", "allow_networks": ["127.0.0.0/8"], **extra}


async def test_an_absolute_form_request_goes_through_the_route_and_its_answer_is_relayed(
    tmp_path: Path, plain_upstream: int,
) -> None:
    async with proxy_lab(tmp_path, [_plain_route(plain_upstream)],
                         answers={"plain.partner.test": [["127.0.0.1"]]}) as lab, \
            httpx.AsyncClient(proxy=lab.proxy_url(), trust_env=False) as client:
        response = await client.post(f"http://plain.partner.test:{plain_upstream}/v1/items?x=1", content=b"hello")
    assert response.status_code == 200
    seen = response.json()
    assert seen == {"path": "/v1/items?x=1", "method": "POST", "host": f"plain.partner.test:{plain_upstream}",
                    "body": "hello", "proxy_auth": None, "workflow": None}
    assert response.headers["x-request-id"]
    [forwarded] = lab.backend.forwarded
    assert (forwarded.identity.workflow_id, forwarded.identity.execution_id, forwarded.identity.consumer_id) == (
        "wf-1", "ex-1", "alice")


async def test_a_request_without_proxy_credentials_gets_407_with_a_challenge_and_a_problem_document(
    tmp_path: Path, plain_upstream: int,
) -> None:
    async with proxy_lab(tmp_path, [_plain_route(plain_upstream)],
                         answers={"plain.partner.test": [["127.0.0.1"]]}) as lab, \
            httpx.AsyncClient(proxy=f"http://127.0.0.1:{lab.port}", trust_env=False) as client:
        response = await client.get(f"http://plain.partner.test:{plain_upstream}/v1/items")
    assert response.status_code == 407
    assert response.headers.get_list("proxy-authenticate") == [
        'Basic realm="portcullis egress", charset="UTF-8"', 'Bearer realm="portcullis egress"']
    assert response.headers["content-type"] == "application/problem+json"
    doc = orjson.loads(response.content)
    assert doc == {"type": "https://portcullis.dev/errors/proxy.missing_credentials",
                   "title": "Proxy authentication required.", "status": 407, "code": "proxy.missing_credentials",
                   "request_id": response.headers["x-request-id"]}
    [refusal] = lab.backend.refusals
    assert (refusal.decision, refusal.request_id) == ("auth:proxy_credentials_missing", doc["request_id"])
    assert lab.backend.forwarded == []


async def test_a_wrong_key_gets_407_invalid_credentials(tmp_path: Path, plain_upstream: int) -> None:
    async with proxy_lab(tmp_path, [_plain_route(plain_upstream)],
                         answers={"plain.partner.test": [["127.0.0.1"]]}) as lab:
        wrong = "pcl_aaaaaaaaaaaa_" + "A" * 43
        async with httpx.AsyncClient(proxy=lab.proxy_url(key=wrong), trust_env=False) as client:
            response = await client.get(f"http://plain.partner.test:{plain_upstream}/v1/items")
    assert response.status_code == 407
    assert response.json()["code"] == "proxy.invalid_credentials"
    assert lab.backend.refusals[0].decision == "auth:unknown_key"


async def test_a_connect_tunnel_reaches_the_checked_address_and_is_recorded_once(
    tmp_path: Path, tls_upstream: tuple[int, ssl.SSLContext],
) -> None:
    port, trust = tls_upstream
    async with proxy_lab(tmp_path, [_tls_route(port)], answers={"api.partner.test": [["127.0.0.1"]]}) as lab:
        async with httpx.AsyncClient(proxy=lab.proxy_url(), verify=trust, trust_env=False) as client:
            response = await client.get(f"https://api.partner.test:{port}/v1/hello")
            assert response.status_code == 200
            assert response.json()["host"] == f"api.partner.test:{port}"
        record = await lab.backend.next_tunnel()
    assert (record.host, record.port, record.route, record.address) == ("api.partner.test", port, "partner",
                                                                        "127.0.0.1")
    assert (record.status, record.decision, record.mode, record.ended) == (200, "allowed", "splice", "closed")
    assert record.bytes_up > 0 and record.bytes_down > 0
    assert record.identity is not None and record.identity.workflow_id == "wf-1"
    assert lab.resolver.lookups == ["api.partner.test"]  # resolved once, by the guard; the tunnel dials the answer


async def test_a_tunnel_is_refused_for_a_host_no_route_covers(tmp_path: Path,
                                                              tls_upstream: tuple[int, ssl.SSLContext]) -> None:
    port, trust = tls_upstream
    async with proxy_lab(tmp_path, [_tls_route(port)], answers={"api.partner.test": [["127.0.0.1"]]}) as lab:
        async with httpx.AsyncClient(proxy=lab.proxy_url(), verify=trust, trust_env=False) as client:
            with pytest.raises(httpx.ProxyError):
                await client.get(f"https://elsewhere.test:{port}/")
        record = await lab.backend.next_tunnel()
    assert (record.host, record.status, record.decision) == ("elsewhere.test", 403,
                                                            "egress_refused:no_route_for_tunnel")


async def test_a_tunnel_spends_the_routes_rate_limit_once(tmp_path: Path,
                                                          tls_upstream: tuple[int, ssl.SSLContext]) -> None:
    port, trust = tls_upstream
    async with proxy_lab(tmp_path, [_tls_route(port, rate_limits=["1/minute"])],
                         answers={"api.partner.test": [["127.0.0.1"]]}) as lab:
        async with httpx.AsyncClient(proxy=lab.proxy_url(), verify=trust, trust_env=False) as client:
            # Two requests on one tunnel: one spend.
            assert (await client.get(f"https://api.partner.test:{port}/a")).status_code == 200
            assert (await client.get(f"https://api.partner.test:{port}/b")).status_code == 200
        assert (await lab.backend.next_tunnel()).decision == "allowed"
        async with httpx.AsyncClient(proxy=lab.proxy_url(), verify=trust, trust_env=False) as client:
            with pytest.raises(httpx.ProxyError):
                await client.get(f"https://api.partner.test:{port}/c")
        record = await lab.backend.next_tunnel()
    assert (record.status, record.decision) == (429, "egress_refused:rate_limited:egress:partner")


async def test_an_intercepted_tunnel_runs_each_request_through_the_pipeline(tmp_path: Path, plain_upstream: int) -> None:
    clock = ManualClock(wall=__import__("time").time())

    def make_ca() -> tuple[CertificateAuthority, ssl.SSLContext]:
        files = create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="Lab CA", days=2, clock=clock)
        return (CertificateAuthority.load(files.cert_file, files.key_file, clock=clock),
                ssl.create_default_context(cafile=str(files.cert_file)))

    authority, trust = await asyncio.to_thread(make_ca)
    routes = [_plain_route(plain_upstream),
              {"name": "llm", "url": "https://llm.partner.test", "intercept": True, "allow_networks": ["127.0.0.0/8"]}]
    try:
        async with proxy_lab(tmp_path, routes, answers={"plain.partner.test": [["127.0.0.1"]]}, authority=authority,
                             plain_for={"llm.partner.test": "plain"}, proxy_ca=True) as lab:
            async with httpx.AsyncClient(proxy=lab.proxy_url(), verify=trust, trust_env=False) as client:
                first = await client.post("https://llm.partner.test/v1/chat?stream=false", content=b"{}")
                second = await client.get("https://llm.partner.test/v1/models")
            record = await lab.backend.next_tunnel()
    finally:
        await asyncio.to_thread(authority.close)
    assert (first.status_code, first.json()["path"], first.json()["body"]) == (200, "/v1/chat?stream=false", "{}")
    assert second.json()["path"] == "/v1/models"
    assert [f.url for f in lab.backend.forwarded] == ["https://llm.partner.test/v1/chat?stream=false",
                                                      "https://llm.partner.test/v1/models"]
    assert all(f.tunnel == "intercept" for f in lab.backend.forwarded)
    assert (record.mode, record.decision, record.requests, record.route) == ("intercept", "allowed", 2, "llm")


async def test_a_half_closed_tunnel_still_carries_the_answer(tmp_path: Path) -> None:
    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's half-close
        writer.write(b"got %d" % len(data))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    route = {"name": "raw", "url": f"https://raw.partner.test:{port}", "allow_networks": ["127.0.0.0/8"]}
    try:
        async with proxy_lab(tmp_path, [route], answers={"raw.partner.test": [["127.0.0.1"]]}) as lab, \
                raw_connection(lab.port) as (reader, writer):
            writer.write(f"CONNECT raw.partner.test:{port} HTTP/1.1\r\nProxy-Authorization: ".encode()
                         + lab.basic() + b"\r\n\r\n" + b"x" * 100_000)  # the first bytes ride with the head
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer.write_eof()
            async with asyncio.timeout(5):
                assert await reader.read() == b"got 100000"
            record = await lab.backend.next_tunnel()
    finally:
        server.close()
    assert (record.ended, record.bytes_up, record.bytes_down) == ("closed", 100_000, 10)


async def test_expect_100_continue_is_answered_before_the_body(tmp_path: Path, plain_upstream: int) -> None:
    async with proxy_lab(tmp_path, [_plain_route(plain_upstream)],
                         answers={"plain.partner.test": [["127.0.0.1"]]}) as lab, \
            raw_connection(lab.port) as (reader, writer):
        writer.write(f"POST http://plain.partner.test:{plain_upstream}/up HTTP/1.1\r\n"
                     f"Host: plain.partner.test:{plain_upstream}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                     "Proxy-Authorization: ".encode() + lab.basic() + b"\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        status, _, body = await read_response(reader)
    assert (status, orjson.loads(body)["body"]) == (200, "hello")


async def test_connections_beyond_the_per_address_cap_get_503(tmp_path: Path, plain_upstream: int) -> None:
    async with proxy_lab(tmp_path, [_plain_route(plain_upstream)], limits=ServerLimits(max_connections_per_ip=1),
                         answers={"plain.partner.test": [["127.0.0.1"]]}) as lab, \
            raw_connection(lab.port) as (_, first_writer):
        first_writer.write(b"GET ")  # holds the one connection this address may have
        await first_writer.drain()
        raw = await raw_request(lab.port, b"GET http://plain.partner.test/ HTTP/1.1\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head
    assert orjson.loads(body)["code"] == "service.unavailable"
    assert lab.backend.refusals[0].decision == "connection_cap:max_connections_per_ip"


async def test_an_intercepting_tunnel_a_client_does_not_trust_ends_at_the_handshake(tmp_path: Path) -> None:
    clock = ManualClock(wall=__import__("time").time())

    def make_ca() -> CertificateAuthority:
        files = create_ca(tmp_path / "ca.pem", tmp_path / "ca.key", common_name="Lab CA", days=2, clock=clock)
        return CertificateAuthority.load(files.cert_file, files.key_file, clock=clock)

    authority = await asyncio.to_thread(make_ca)
    def other_trust() -> ssl.SSLContext:
        (tmp_path / "other").mkdir()
        return issue_tls_files(tmp_path / "other").client_context()

    other = await asyncio.to_thread(other_trust)
    route = {"name": "llm", "url": "https://llm.partner.test", "intercept": True}
    try:
        async with proxy_lab(tmp_path, [route], authority=authority, proxy_ca=True) as lab:
            async with httpx.AsyncClient(proxy=lab.proxy_url(), verify=other, trust_env=False) as client:
                with pytest.raises(httpx.ConnectError):
                    await client.get("https://llm.partner.test/v1/models")
            record = await lab.backend.next_tunnel()
    finally:
        await asyncio.to_thread(authority.close)
    assert (record.mode, record.ended, record.requests) == ("intercept", "tls_handshake_failed", 0)
    assert lab.backend.forwarded == []


@pytest.mark.parametrize(("method", "fault", "status", "code", "decision"), [
    ("forward", RuntimeError("bug"), 500, "internal", "internal_error:backend_fault"),
    ("authenticate", RuntimeError("bug"), 500, "internal", "internal_error:backend_fault"),
    ("authenticate", Forbidden("missing_scope"), 403, "authz.forbidden", "authz:missing_scope"),
    ("forward", UpstreamTimeout("egress_timeout"), 504, "upstream.timeout", "upstream_error:egress_timeout"),
], ids=["forward-bug", "auth-bug", "auth-forbidden", "upstream-timeout"])
async def test_what_the_backend_raises_is_answered_as_a_problem_and_recorded(
    tmp_path: Path, plain_upstream: int, method: str, fault: Exception, status: int, code: str, decision: str,
) -> None:
    async with proxy_lab(tmp_path, [_plain_route(plain_upstream)],
                         answers={"plain.partner.test": [["127.0.0.1"]]}) as lab, \
            httpx.AsyncClient(proxy=lab.proxy_url(), trust_env=False) as client:
        lab.backend.faults[method] = fault
        response = await client.get(f"http://plain.partner.test:{plain_upstream}/v1/items")
    assert (response.status_code, response.json()["code"]) == (status, code)
    [refusal] = lab.backend.refusals
    assert (refusal.decision, refusal.request_id) == (decision, response.headers["x-request-id"])
