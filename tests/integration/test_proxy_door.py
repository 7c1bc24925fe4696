"""The proxy door in front of a real gateway: real clients (httpx, raw sockets) through the door's
listener and the gateway's egress pipeline to real upstreams on 127.0.0.1.

Upstreams are aiohttp servers, plain and TLS (a throwaway CA that the client trusts for unread
tunnels, and that the route's ``ca_file`` names for the gateway's own TLS leg), reachable only
through the routes' 127.0.0.0/8 network exceptions; their names are answered by a fixed resolver.
Each test reads what a user sees: the status and problem document, the audit record, the metrics.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from aiohttp import web
from tests.conftest import GatewayFactory, gateway_yaml, issue_tls_files, raw_connection, raw_request, read_response
from tests.proxy_kit import LabBackend, ListStream, ProxyGateway, egress_yaml, proxy_gateway

from portcullis.controls.model import BlockKind
from portcullis.egress.proxy import ProxyListener
from portcullis.egress.proxy.authority import create_ca
from portcullis.egress.proxy.backend import PipelineBackend, ProxyPipeline
from portcullis.errors import Forbidden, UpstreamTimeout
from portcullis.gateway.proxy import proxy_limits
from portcullis.gateway.reload import Reloader
from portcullis.gateway.runtime import serving_runtime
from portcullis.testing import ManualClock, catch_all, serve_app


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({"path": request.path_qs, "method": request.method, "host": request.headers.get("Host"),
                              "body": body.decode(), "proxy_auth": request.headers.get("Proxy-Authorization"),
                              "authorization": request.headers.get("Authorization")})


@dataclass(frozen=True)
class Upstreams:
    plain: int
    tls: int
    ca: Path  # the TLS upstream's CA
    trust: ssl.SSLContext  # a client context trusting it


@pytest.fixture
async def upstreams(tmp_path: Path) -> AsyncIterator[Upstreams]:
    def files() -> tuple[ssl.SSLContext, ssl.SSLContext, Path]:
        (tmp_path / "upstream").mkdir()
        made = issue_tls_files(tmp_path / "upstream", names=("api.partner.test", "llm.partner.test"))
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(made.cert, made.key)
        return server, made.client_context(), made.ca

    server, trust, ca = await asyncio.to_thread(files)
    async with serve_app(catch_all(_echo)) as plain, serve_app(catch_all(_echo), ssl_context=server) as tls:
        yield Upstreams(plain, tls, ca, trust)


SECRETS = {"plain_token": "s3cr3t-provider-token", "llm_key": "sk-provider"}
ANSWERS = {"plain.partner.test": [["127.0.0.1"]], "api.partner.test": [["127.0.0.1"]],
           "llm.partner.test": [["127.0.0.1"]], "late.partner.test": [["127.0.0.1"]]}


def routes(up: Upstreams, **partner: object) -> list[dict[str, object]]:
    return [
        {"name": "plain", "url": f"http://plain.partner.test:{up.plain}", "allow_http": True,
         "allow_networks": ["127.0.0.0/8"], "headers": {"Authorization": "Bearer {secret:plain_token}"}},
        {"name": "partner", "url": f"https://api.partner.test:{up.tls}", "allow_networks": ["127.0.0.0/8"], **partner},
    ]


@pytest.fixture
async def door(make_gateway: GatewayFactory, upstreams: Upstreams) -> AsyncIterator[ProxyGateway]:
    async with proxy_gateway(make_gateway, routes(upstreams), answers=ANSWERS, secrets=SECRETS) as pg:
        yield pg


async def test_an_absolute_form_request_runs_the_routes_pipeline_and_is_audited_like_every_door(
    door: ProxyGateway, upstreams: Upstreams,
) -> None:
    async with httpx.AsyncClient(proxy=door.proxy_url(), trust_env=False) as client:
        response = await client.post(f"http://plain.partner.test:{upstreams.plain}/v1/items?x=1", content=b"hello",
                                     headers={"Authorization": "Bearer the-callers-own", "User-Agent": "agent/1"})
    assert response.status_code == 200
    assert response.json() == {"path": "/v1/items?x=1", "method": "POST", "host": f"plain.partner.test:{upstreams.plain}",
                               "body": "hello", "proxy_auth": None, "authorization": "Bearer s3cr3t-provider-token"}
    assert response.headers["x-egress-attempts"] == "1"
    [record] = door.calls
    assert (record.route, record.method, record.path, record.query, record.status, record.decision) == (
        "egress", "POST", "/plain/v1/items", "x=1", 200, "allowed")
    assert (record.consumer_id, record.user_agent, record.request_id) == ("alice", "agent/1",
                                                                          response.headers["x-request-id"])
    assert record.egress is not None
    assert {k: record.egress[k] for k in ("door", "route", "workflow_id", "execution_id", "secrets")} == {
        "door": "proxy", "route": "plain", "workflow_id": "wf-1", "execution_id": "ex-1", "secrets": ["plain_token"]}


async def test_a_url_no_route_covers_is_refused_as_every_door_refuses_an_unknown_route(
    door: ProxyGateway, upstreams: Upstreams,
) -> None:
    async with httpx.AsyncClient(proxy=door.proxy_url(), trust_env=False) as client:
        response = await client.get(f"http://elsewhere.partner.test:{upstreams.plain}/")
    assert (response.status_code, response.json()["code"]) == (403, "egress.destination_denied")
    assert door.calls[0].decision == "egress_refused:unknown_route"
    metrics = door.gw.services.metrics.render().decode()
    assert 'portcullis_egress_refusals_total{kind="unknown_route",route=""} 1.0' in metrics


async def test_without_proxy_credentials_the_answer_is_407_with_a_challenge_and_a_problem_document(
    door: ProxyGateway, upstreams: Upstreams,
) -> None:
    async with httpx.AsyncClient(proxy=f"http://127.0.0.1:{door.port}", trust_env=False) as client:
        response = await client.get(f"http://plain.partner.test:{upstreams.plain}/v1/items")
    assert response.status_code == 407
    assert response.headers.get_list("proxy-authenticate") == [
        'Basic realm="portcullis egress", charset="UTF-8"', 'Bearer realm="portcullis egress"']
    assert orjson.loads(response.content) == {
        "type": "https://portcullis.dev/errors/proxy.missing_credentials", "title": "Proxy authentication required.",
        "status": 407, "code": "proxy.missing_credentials", "request_id": response.headers["x-request-id"]}
    [refusal] = door.refusals
    assert (refusal.decision, refusal.status, refusal.request_id) == (
        "auth:proxy_credentials_missing", 407, response.headers["x-request-id"])
    assert door.calls == []


async def test_a_wrong_key_gets_407_invalid_credentials(door: ProxyGateway, upstreams: Upstreams) -> None:
    async with httpx.AsyncClient(proxy=door.proxy_url(key="pcl_aaaaaaaaaaaa_" + "A" * 43), trust_env=False) as client:
        response = await client.get(f"http://plain.partner.test:{upstreams.plain}/v1/items")
    assert (response.status_code, response.json()["code"]) == (407, "proxy.invalid_credentials")
    assert door.refusals[0].decision == "auth:unknown_key"


async def test_a_tunnel_reaches_the_checked_address_and_leaves_one_record(door: ProxyGateway,
                                                                           upstreams: Upstreams) -> None:
    async with httpx.AsyncClient(proxy=door.proxy_url(), verify=upstreams.trust, trust_env=False) as client:
        response = await client.get(f"https://api.partner.test:{upstreams.tls}/v1/hello")
        assert response.status_code == 200
        assert response.json()["host"] == f"api.partner.test:{upstreams.tls}"
    record = await door.tunnel()
    assert (record.method, record.path, record.status, record.decision) == (
        "CONNECT", f"api.partner.test:{upstreams.tls}", 200, "allowed")
    assert record.egress is not None
    assert {k: record.egress[k] for k in ("door", "route", "mode", "address", "ended", "workflow_id")} == {
        "door": "proxy", "route": "partner", "mode": "splice", "address": "127.0.0.1", "ended": "closed",
        "workflow_id": "wf-1"}
    assert record.bytes_in > 0 and record.bytes_out > 0 and record.consumer_id == "alice"
    assert door.resolver.lookups == ["api.partner.test"]  # the guard's lookup; the tunnel dialled its answer
    metrics = door.gw.services.metrics.render().decode()
    assert 'portcullis_egress_proxy_tunnels_total{decision="allowed",route="partner"} 1.0' in metrics
    assert f'portcullis_egress_proxy_tunnel_bytes_total{{direction="up",route="partner"}} {float(record.bytes_in)}' \
        in metrics


async def test_a_tunnel_to_a_host_no_route_covers_is_refused_403(door: ProxyGateway, upstreams: Upstreams) -> None:
    async with httpx.AsyncClient(proxy=door.proxy_url(), verify=upstreams.trust, trust_env=False) as client:
        with pytest.raises(httpx.ProxyError):
            await client.get(f"https://elsewhere.partner.test:{upstreams.tls}/")
    record = await door.tunnel()
    assert (record.path, record.status, record.decision) == (
        f"elsewhere.partner.test:{upstreams.tls}", 403, "egress_refused:unknown_route")


@pytest.mark.parametrize(("partner", "budgets", "code", "decision"), [
    ({"rate_limits": ["1/minute"]}, {}, "limit.exceeded", "egress_refused:rate_limited:egress:partner"),
    ({}, {"execution_calls": 1}, "budget.exhausted", "egress_refused:budget:execution_calls"),
], ids=["rate-limit", "execution-budget"])
async def test_a_tunnel_spends_the_routes_limits_and_budgets_once(
    make_gateway: GatewayFactory, upstreams: Upstreams, partner: dict[str, object], budgets: dict[str, object],
    code: str, decision: str,
) -> None:
    async with proxy_gateway(make_gateway, routes(upstreams, **partner), answers=ANSWERS, budgets=budgets,
                             secrets=SECRETS) as pg:
        async with httpx.AsyncClient(proxy=pg.proxy_url(), verify=upstreams.trust, trust_env=False) as client:
            # Two requests on one tunnel: one spend.
            assert (await client.get(f"https://api.partner.test:{upstreams.tls}/a")).status_code == 200
            assert (await client.get(f"https://api.partner.test:{upstreams.tls}/b")).status_code == 200
        assert (await pg.tunnel()).decision == "allowed"
        async with raw_connection(pg.port) as (reader, writer):
            writer.write(f"CONNECT api.partner.test:{upstreams.tls} HTTP/1.1\r\nProxy-Authorization: ".encode()
                         + pg.basic() + b"\r\n\r\n")
            status, headers, body = await read_response(reader)
        record = await pg.tunnel()
    assert (status, orjson.loads(body)["code"]) == (429, code)
    assert (record.status, record.decision, record.request_id) == (429, decision, orjson.loads(body)["request_id"])
    if code == "limit.exceeded":
        assert b"retry-after" in headers


async def test_a_blocked_user_cannot_open_a_tunnel(door: ProxyGateway, upstreams: Upstreams) -> None:
    await door.gw.services.controls.add_block(BlockKind.USER, "alice", reason="incident", actor="test")
    raw = await raw_request(door.port, f"CONNECT api.partner.test:{upstreams.tls} HTTP/1.1\r\nProxy-Authorization: "
                            .encode() + door.basic() + b"\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 403")
    assert orjson.loads(raw.partition(b"\r\n\r\n")[2])["code"] == "access.blocked"
    assert (await door.tunnel()).decision.startswith("blocked:")


async def test_a_key_without_the_doors_scope_is_refused_403(make_gateway: GatewayFactory, upstreams: Upstreams) -> None:
    async with proxy_gateway(make_gateway, routes(upstreams), answers=ANSWERS, proxy={"scopes": ["egress:proxy"]},
                             secrets=SECRETS) as pg:
        async with httpx.AsyncClient(proxy=pg.proxy_url(), trust_env=False) as client:
            response = await client.get(f"http://plain.partner.test:{upstreams.plain}/v1/items")
        assert (response.status_code, response.json()["code"]) == (403, "authz.forbidden")
        assert pg.refusals[0].decision == "authz:proxy_scope_missing"
        allowed = await pg.gw.key("bob", scopes=("egress:proxy",))
        async with httpx.AsyncClient(proxy=pg.proxy_url(key=allowed), trust_env=False) as client:
            assert (await client.get(f"http://plain.partner.test:{upstreams.plain}/v1/items")).status_code == 200


async def test_an_intercepted_tunnel_runs_every_request_through_the_routes_pipeline(
    make_gateway: GatewayFactory, upstreams: Upstreams, tmp_path: Path,
) -> None:
    ca = await asyncio.to_thread(create_ca, tmp_path / "gw-ca.pem", tmp_path / "gw-ca.key", common_name="Gateway CA",
                                 days=2, clock=ManualClock(wall=time.time()))
    trust = await asyncio.to_thread(ssl.create_default_context, cafile=str(ca.cert_file))
    llm = {"name": "llm", "url": f"https://llm.partner.test:{upstreams.tls}", "intercept": True,
           "allow_networks": ["127.0.0.0/8"], "ca_file": str(upstreams.ca), "paths": ["/v1/**"],
           "headers": {"Authorization": "Bearer {secret:llm_key}"}}
    proxy = {"ca": {"cert_file": str(ca.cert_file), "key_file": str(ca.key_file)}}
    async with proxy_gateway(make_gateway, [*routes(upstreams), llm], answers=ANSWERS, proxy=proxy,
                             secrets=SECRETS) as pg:
        async with httpx.AsyncClient(proxy=pg.proxy_url(), verify=trust, trust_env=False) as client:
            chat = await client.post(f"https://llm.partner.test:{upstreams.tls}/v1/chat", content=b"{}",
                                     headers={"Authorization": "Bearer sk-the-agent-should-not-have"})
            outside = await client.get(f"https://llm.partner.test:{upstreams.tls}/admin")
        record = await pg.tunnel()
    assert (chat.status_code, chat.json()["path"], chat.json()["authorization"]) == (200, "/v1/chat", "Bearer sk-provider")
    assert (outside.status_code, outside.json()["code"]) == (403, "egress.destination_denied")  # the route's path rules
    assert [(c.path, c.decision) for c in pg.calls] == [("/llm/v1/chat", "allowed"),
                                                        ("/llm/admin", "egress_refused:path_not_allowed")]
    assert all(c.egress and c.egress["tunnel"] == "intercept" for c in pg.calls)
    assert record.egress is not None
    assert (record.egress["mode"], record.egress["requests"], record.decision) == ("intercept", 2, "allowed")


async def test_a_half_closed_tunnel_still_carries_the_answer(make_gateway: GatewayFactory) -> None:
    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's half-close
        writer.write(b"got %d" % len(data))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(count, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    route = {"name": "raw", "url": f"https://raw.partner.test:{port}", "allow_networks": ["127.0.0.0/8"]}
    try:
        async with proxy_gateway(make_gateway, [route], answers={"raw.partner.test": [["127.0.0.1"]]}) as pg, \
                raw_connection(pg.port) as (reader, writer):
            writer.write(f"CONNECT raw.partner.test:{port} HTTP/1.1\r\nProxy-Authorization: ".encode()
                         + pg.basic() + b"\r\n\r\n" + b"x" * 100_000)  # the first bytes ride with the head
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer.write_eof()
            async with asyncio.timeout(5):
                assert await reader.read() == b"got 100000"
            record = await pg.tunnel()
    finally:
        server.close()
    assert record.egress is not None
    assert (record.egress["ended"], record.bytes_in, record.bytes_out) == ("closed", 100_000, 10)


async def test_expect_100_continue_is_answered_before_the_body(door: ProxyGateway, upstreams: Upstreams) -> None:
    async with raw_connection(door.port) as (reader, writer):
        writer.write(f"POST http://plain.partner.test:{upstreams.plain}/up HTTP/1.1\r\n"
                     f"Host: plain.partner.test:{upstreams.plain}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                     "Proxy-Authorization: ".encode() + door.basic() + b"\r\n\r\n")
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        status, _, body = await read_response(reader)
    assert (status, orjson.loads(body)["body"]) == (200, "hello")


async def test_connections_beyond_the_per_address_cap_get_503(make_gateway: GatewayFactory,
                                                             upstreams: Upstreams) -> None:
    async with proxy_gateway(make_gateway, routes(upstreams), answers=ANSWERS, secrets=SECRETS,
                             proxy={"max_connections_per_ip": 1}) as pg, \
            raw_connection(pg.port) as (_, first_writer):
        first_writer.write(b"GET ")  # holds the one connection this address may have
        await first_writer.drain()
        raw = await raw_request(pg.port, b"GET http://plain.partner.test/ HTTP/1.1\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head
    assert orjson.loads(body)["code"] == "service.unavailable"
    assert pg.refusals[0].decision == "connection_cap:max_connections_per_ip"


async def test_an_intercepted_tunnel_a_client_does_not_trust_ends_at_the_handshake(
    make_gateway: GatewayFactory, upstreams: Upstreams, tmp_path: Path,
) -> None:
    ca = await asyncio.to_thread(create_ca, tmp_path / "gw-ca.pem", tmp_path / "gw-ca.key", common_name="Gateway CA",
                                 days=2, clock=ManualClock(wall=time.time()))
    llm = {"name": "llm", "url": "https://llm.partner.test", "intercept": True}
    proxy = {"ca": {"cert_file": str(ca.cert_file), "key_file": str(ca.key_file)}}
    async with proxy_gateway(make_gateway, [llm], answers=ANSWERS, proxy=proxy) as pg:
        async with httpx.AsyncClient(proxy=pg.proxy_url(), verify=upstreams.trust, trust_env=False) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("https://llm.partner.test/v1/models")
        record = await pg.tunnel()
    assert record.egress is not None
    assert (record.egress["mode"], record.egress["ended"], record.egress["requests"]) == (
        "intercept", "tls_handshake_failed", 0)
    assert pg.calls == []


@pytest.mark.parametrize(("method", "fault", "status", "code", "decision"), [
    ("forward", RuntimeError("bug"), 500, "internal", "internal_error:backend_fault"),
    ("authenticate", RuntimeError("bug"), 500, "internal", "internal_error:backend_fault"),
    ("authenticate", Forbidden("missing_scope"), 403, "authz.forbidden", "authz:missing_scope"),
    ("forward", UpstreamTimeout("egress_timeout"), 504, "upstream.timeout", "upstream_error:egress_timeout"),
], ids=["forward-bug", "auth-bug", "auth-forbidden", "upstream-timeout"])
async def test_what_a_backend_raises_is_answered_as_a_problem_and_recorded(
    door: ProxyGateway, upstreams: Upstreams, lab_door: tuple[LabBackend, int], method: str, fault: Exception,
    status: int, code: str, decision: str,
) -> None:
    lab, port = lab_door
    lab.faults[method] = fault
    async with httpx.AsyncClient(proxy=f"http://wf=w;ex=e:{door.key}@127.0.0.1:{port}", trust_env=False) as client:
        response = await client.get(f"http://plain.partner.test:{upstreams.plain}/v1/items")
    assert (response.status_code, response.json()["code"]) == (status, code)
    [refusal] = lab.refusals
    assert (refusal.decision, refusal.request_id) == (decision, response.headers["x-request-id"])


@pytest.fixture
async def lab_door(door: ProxyGateway) -> AsyncIterator[tuple[LabBackend, int]]:
    def current() -> ProxyPipeline:
        runtime = serving_runtime(door.gw.app)
        assert runtime.egress is not None and runtime.config.egress is not None
        return ProxyPipeline(runtime.egress, runtime.config.egress, runtime.key_verifier)

    lab = LabBackend(PipelineBackend(current, audit=door.submit, clock=door.gw.clock))
    config = serving_runtime(door.gw.app).config
    assert config.egress is not None and config.egress.proxy is not None
    listener = ProxyListener(lab, proxy_limits(config.egress.proxy, 1.0), clock=door.gw.clock)
    await listener.start()
    try:
        yield lab, listener.port
    finally:
        await listener.stop()


async def test_a_streamed_answer_is_relayed_chunk_by_chunk_and_closed(
    door: ProxyGateway, upstreams: Upstreams, lab_door: tuple[LabBackend, int],
) -> None:
    lab, port = lab_door
    stream = ListStream([b"data: one\\n\\n", b"", b"data: two\\n\\n"])
    lab.streams.append(stream)
    async with httpx.AsyncClient(proxy=f"http://wf=w;ex=e:{door.key}@127.0.0.1:{port}", trust_env=False) as client, \
            client.stream("GET", f"http://plain.partner.test:{upstreams.plain}/v1/chat") as response:
        assert response.headers["transfer-encoding"] == "chunked" and "content-length" not in response.headers
        chunks = [c async for c in response.aiter_raw()]
    assert b"".join(chunks) == b"data: one\\n\\ndata: two\\n\\n"
    assert stream.closed


async def test_a_stream_cut_upstream_cuts_the_clients_connection(
    door: ProxyGateway, upstreams: Upstreams, lab_door: tuple[LabBackend, int],
) -> None:
    lab, port = lab_door
    stream = ListStream([b"data: one\\n\\n", UpstreamTimeout("egress_timeout")])
    lab.streams.append(stream)
    async with httpx.AsyncClient(proxy=f"http://wf=w;ex=e:{door.key}@127.0.0.1:{port}", trust_env=False) as client, \
            client.stream("GET", f"http://plain.partner.test:{upstreams.plain}/v1/chat") as response:
        with pytest.raises(httpx.RemoteProtocolError):  # never a clean end: the client knows it is cut
            await response.aread()
    assert stream.closed


async def test_a_reload_reaches_the_proxy_door_at_its_next_request(
    door: ProxyGateway, upstreams: Upstreams, tmp_path: Path,
) -> None:
    url = f"http://late.partner.test:{upstreams.plain}/v1/x"
    async with httpx.AsyncClient(proxy=door.proxy_url(), trust_env=False) as client:
        assert (await client.get(url)).status_code == 403  # no route yet
        late = {"name": "late", "url": f"http://late.partner.test:{upstreams.plain}", "allow_http": True,
                "allow_networks": ["127.0.0.0/8"]}
        config = tmp_path / "reloaded.yaml"
        text = gateway_yaml("http://127.0.0.1:9", egress_yaml([*routes(upstreams), late]))
        await asyncio.to_thread(config.write_text, text)
        reloader = Reloader(door.gw.app, config, grace_s=0)
        try:
            assert (await reloader.reload()).ok  # type: ignore[union-attr]
        finally:
            await reloader.aclose()
        assert (await client.get(url)).status_code == 200  # same listener, the new executor's routes
    assert [c.decision for c in door.calls] == ["egress_refused:unknown_route", "allowed"]


async def test_stopping_the_listener_ends_open_tunnels_within_the_drain_and_records_them(
    make_gateway: GatewayFactory,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # says nothing until the tunnel goes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    route = {"name": "quiet", "url": f"https://quiet.partner.test:{port}", "allow_networks": ["127.0.0.0/8"]}
    try:
        async with proxy_gateway(make_gateway, [route], answers={"quiet.partner.test": [["127.0.0.1"]]}) as pg, \
                raw_connection(pg.port) as (reader, writer):
            writer.write(f"CONNECT quiet.partner.test:{port} HTTP/1.1\r\nProxy-Authorization: ".encode()
                         + pg.basic() + b"\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await pg.listener.stop()  # the kit's drain is 2 s; the tunnel would idle for 60
            record = await pg.tunnel()
            assert pg.listener.open_connections == 0
    finally:
        server.close()
    assert record.egress is not None and record.egress["ended"] == "cancelled"


async def test_a_tunnel_asked_as_validate_only_is_refused(door: ProxyGateway, upstreams: Upstreams) -> None:
    # Nothing may leave the gateway in validate_only; a tunnel is bytes leaving it.
    raw = await raw_request(door.port, f"CONNECT api.partner.test:{upstreams.tls} HTTP/1.1\r\nX-Run-Mode: "
                            "validate_only\r\nProxy-Authorization: ".encode() + door.basic() + b"\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 403")
    record = await door.tunnel()
    assert (record.status, record.decision) == (403, "egress_refused:tunnel_validate_only")


async def test_open_tunnels_do_not_hold_the_routes_bulkhead(make_gateway: GatewayFactory, upstreams: Upstreams) -> None:
    bulkhead = {"bulkhead": {"max_concurrent": 1, "max_queue": 0}}
    async with proxy_gateway(make_gateway, routes(upstreams, **bulkhead), answers=ANSWERS, secrets=SECRETS) as pg, \
            httpx.AsyncClient(proxy=pg.proxy_url(), verify=upstreams.trust, trust_env=False) as first, \
            httpx.AsyncClient(proxy=pg.proxy_url(), verify=upstreams.trust, trust_env=False) as second:
        # Two clients, two tunnels open at once on a route with one place: each took its turn.
        assert (await first.get(f"https://api.partner.test:{upstreams.tls}/a")).status_code == 200
        assert (await second.get(f"https://api.partner.test:{upstreams.tls}/b")).status_code == 200
