"""Tracing on: spans of a real gateway in front of real servers on 127.0.0.1, exported to memory.

The tracer is the gateway's own ``OtelTracer`` with the SDK's ``InMemorySpanExporter`` in place of
the OTLP one (the OTLP export itself is ``test_tracing_export.py``); everything else is as served.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from ipaddress import ip_address
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

from portcullis.config.model import TracingConfig
from portcullis.controls.model import BlockKind
from portcullis.egress.resolver import StaticResolver
from portcullis.observability.tracing_otel import OtelTracer
from portcullis.testing import catch_all, serve_app
from portcullis.vault import generate_master_key

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE}-{PARENT}-01"

ROUTES = """
routes:
  - {name: items, path: "/items/{id}", upstream: api, auth: none}
  - {name: private, path: "/private", upstream: api}
"""


class Traced:
    """An ``OtelTracer`` exporting to memory, and its spans."""

    def __init__(self, *, trusted: list[str], sample_ratio: float = 1.0) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer = OtelTracer(TracingConfig.model_validate({
            "enabled": True, "trusted_peers": trusted, "sample_ratio": sample_ratio,
            "exporter": {"endpoint": "http://127.0.0.1:9"},  # unused: spans go to memory
        }), exporter=self.exporter)

    async def spans(self) -> list[ReadableSpan]:
        await asyncio.to_thread(self.tracer.force_flush)  # the batch processor's thread exports
        return list(self.exporter.get_finished_spans())

    async def server_and_clients(self) -> tuple[ReadableSpan, list[ReadableSpan]]:
        spans = await self.spans()
        [server] = [s for s in spans if s.kind is SpanKind.SERVER]
        return server, [s for s in spans if s.kind is SpanKind.CLIENT]


TracedFactory = Callable[..., Traced]


@pytest.fixture
def traced() -> TracedFactory:
    return Traced


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"


def traceparent_of(span: ReadableSpan) -> str:
    """The header a request made under ``span`` must carry (the SDK sets the sampled and, being
    Trace Context Level 2, the random flag)."""
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


async def test_a_request_gets_a_server_span_and_a_client_child_whose_traceparent_the_upstream_receives(
    make_gateway: GatewayFactory, upstream: UpstreamServer, traced: TracedFactory
) -> None:
    t = traced(trusted=[])
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=t.tracer)
    r = await gw.client.get("/items/7?color=red", headers={"User-Agent": "tests"})
    assert r.status_code == 200
    server, [client] = await t.server_and_clients()
    trace_id, server_span_id = hex_ids(server)
    assert server.name == "GET /items/{id}"
    assert dict(server.attributes or {}) == {
        "http.request.method": "GET", "url.path": "/items/7", "url.scheme": "http", "http.route": "/items/{id}",
        "http.response.status_code": 200, "server.address": "127.0.0.1", "server.port": gw.port,
        "client.address": "127.0.0.1", "network.protocol.version": "1.1",
        "portcullis.request_id": r.headers["x-request-id"], "portcullis.decision": "allowed",
    }
    assert server.status.status_code is StatusCode.UNSET and server.parent is None
    upstream_port = int(upstream.url.rsplit(":", 1)[1])
    assert client.parent is not None and f"{client.parent.span_id:016x}" == server_span_id
    assert dict(client.attributes or {}) == {
        "http.request.method": "GET", "server.address": "127.0.0.1", "server.port": upstream_port,
        "url.full": f"{upstream.url}/items/7", "network.protocol.version": "1.1", "http.response.status_code": 200,
    }
    client_trace, client_span_id = hex_ids(client)
    assert client_trace == trace_id
    assert upstream.seen[-1].header("traceparent") == traceparent_of(client)
    assert client_span_id in traceparent_of(client)
    assert upstream.seen[-1].header("tracestate") is None
    [record] = await gw.audit_records()
    assert record["trace_id"] == trace_id and record["request_id"] == r.headers["x-request-id"]
    assert "traceparent" not in r.headers  # the client's handle is X-Request-Id


async def test_a_refusal_shows_the_decision_and_problem_code_on_the_server_span_and_calls_nothing(
    make_gateway: GatewayFactory, upstream: UpstreamServer, traced: TracedFactory
) -> None:
    t = traced(trusted=[])
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=t.tracer)
    r = await gw.client.get("/private")
    assert r.status_code == 401 and r.json()["code"] == "auth.missing_credentials"
    server, clients = await t.server_and_clients()
    assert clients == [] and upstream.seen == []
    attributes = dict(server.attributes or {})
    assert attributes["portcullis.problem.code"] == "auth.missing_credentials"
    assert attributes["portcullis.decision"] == "auth_failed"
    assert attributes["http.response.status_code"] == 401 and attributes["http.route"] == "/private"
    assert "error.type" not in attributes  # a 4xx is the client's error, not the server's (semantic conventions)
    [record] = await gw.audit_records()
    assert record["trace_id"] == hex_ids(server)[0]


async def test_a_blocked_consumer_shows_on_the_server_span_and_its_security_event_carries_the_trace_id(
    make_gateway: GatewayFactory, upstream: UpstreamServer, traced: TracedFactory
) -> None:
    t = traced(trusted=[])
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=t.tracer)
    key = await gw.key("mallory")
    await gw.services.controls.add_block(BlockKind.CONSUMER, "mallory", reason="scraping", actor="test")
    r = await gw.client.get("/private", headers={"X-API-Key": key})
    assert r.status_code == 403
    server, clients = await t.server_and_clients()
    assert clients == [] and upstream.seen == []
    attributes = dict(server.attributes or {})
    assert (attributes["portcullis.problem.code"], attributes["portcullis.decision"]) == ("access.blocked", "blocked")
    trace_id = hex_ids(server)[0]
    records = await gw.audit_records()
    enforced = [x for x in records if x["decision"] == "block.enforced:denied"]
    request = [x for x in records if x["class"] == "request" and x["request_id"] == r.headers["x-request-id"]]
    assert [x["trace_id"] for x in enforced] == [trace_id] and [x["trace_id"] for x in request] == [trace_id]


async def test_an_unreachable_upstream_marks_both_spans_as_errors(
    make_gateway: GatewayFactory, traced: TracedFactory
) -> None:
    t = traced(trusted=[])
    gw = await make_gateway(gateway_yaml("http://127.0.0.1:9", ROUTES), tracer=t.tracer)
    r = await gw.client.get("/items/1")
    assert r.status_code == 502
    server, [client] = await t.server_and_clients()
    assert server.status.status_code is StatusCode.ERROR and (server.attributes or {})["error.type"] == "502"
    assert (server.attributes or {})["portcullis.problem.code"] == r.json()["code"]
    assert client.status.status_code is StatusCode.ERROR
    assert (client.attributes or {})["error.type"] == r.json()["code"]


async def test_a_valid_traceparent_from_a_trusted_peer_is_continued_with_its_tracestate(
    make_gateway: GatewayFactory, upstream: UpstreamServer, traced: TracedFactory
) -> None:
    t = traced(trusted=["127.0.0.0/8"])
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=t.tracer)
    r = await gw.client.get("/items/1", headers={"traceparent": INCOMING, "tracestate": "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7"})
    assert r.status_code == 200
    server, [client] = await t.server_and_clients()
    assert hex_ids(server)[0] == TRACE
    assert server.parent is not None and server.parent.is_remote and f"{server.parent.span_id:016x}" == PARENT
    assert server.links == ()
    assert upstream.seen[-1].header("traceparent") == traceparent_of(client)
    assert traceparent_of(client).startswith(f"00-{TRACE}-") and traceparent_of(client).endswith("1")
    assert upstream.seen[-1].header("tracestate") == "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    [record] = await gw.audit_records()
    assert record["trace_id"] == TRACE


async def test_a_trusted_peers_unsampled_flag_is_followed_and_still_propagated(
    make_gateway: GatewayFactory, upstream: UpstreamServer, traced: TracedFactory
) -> None:
    t = traced(trusted=["127.0.0.0/8"])
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=t.tracer)
    await gw.client.get("/items/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-00"})
    assert await t.spans() == []  # not recorded, as the parent decided
    sent = upstream.seen[-1].header("traceparent")
    assert sent is not None and sent.startswith(f"00-{TRACE}-") and sent.endswith("-00") and PARENT not in sent
    [record] = await gw.audit_records()
    assert record["trace_id"] == TRACE


async def test_a_traceparent_from_an_untrusted_peer_starts_a_new_trace_and_is_only_a_link(
    make_gateway: GatewayFactory, upstream: UpstreamServer, traced: TracedFactory
) -> None:
    t = traced(trusted=["10.0.0.0/8"])  # the tests' client is 127.0.0.1: not trusted
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=t.tracer)
    # Unsampled on purpose: an untrusted caller cannot turn sampling off (or on) either.
    await gw.client.get("/items/1", headers={"traceparent": f"00-{TRACE}-{PARENT}-00", "tracestate": "evil=1"})
    server, [client] = await t.server_and_clients()
    trace_id = hex_ids(server)[0]
    assert trace_id != TRACE and server.parent is None
    [link] = server.links
    assert (f"{link.context.trace_id:032x}", f"{link.context.span_id:016x}") == (TRACE, PARENT)
    assert dict(link.attributes or {}) == {"portcullis.trace.untrusted": True}
    assert upstream.seen[-1].header("traceparent") == traceparent_of(client)
    assert traceparent_of(client).startswith(f"00-{trace_id}-")
    assert upstream.seen[-1].header("tracestate") is None
    [record] = await gw.audit_records()
    assert record["trace_id"] == trace_id


async def test_with_sampling_at_zero_nothing_is_recorded_but_the_upstream_gets_a_traceparent(
    make_gateway: GatewayFactory, upstream: UpstreamServer, traced: TracedFactory
) -> None:
    t = traced(trusted=[], sample_ratio=0.0)
    gw = await make_gateway(gateway_yaml(upstream.url, ROUTES), tracer=t.tracer)
    await gw.client.get("/items/1")
    assert await t.spans() == []
    sent = upstream.seen[-1].header("traceparent")
    [record] = await gw.audit_records()
    assert sent is not None and sent.startswith(f"00-{record['trace_id']}-")
    assert int(sent[-2:], 16) & 0x01 == 0  # not sampled


MASTER = generate_master_key()


@pytest.fixture
async def flaky_provider() -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    """A third party that answers 503 to the first call, then 200."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"ok": len(seen) > 1}, status=503 if len(seen) == 1 else 200)

    async with serve_app(catch_all(handle)) as port:
        yield port, seen


async def test_an_egress_call_with_one_retry_yields_two_attempt_spans_each_propagated(
    make_gateway: GatewayFactory, flaky_provider: tuple[int, list[dict[str, Any]]], traced: TracedFactory
) -> None:
    port, seen = flaky_provider
    t = traced(trusted=[])
    gw = await make_gateway(gateway_yaml("http://127.0.0.1:9", f"""
routes:
  - {{name: health, path: /health, upstream: api, auth: none}}
egress:
  routes:
    - name: partner
      url: "http://api.partner.test:{port}"
      allow_http: true
      allow_networks: [127.0.0.0/8]
      retry: {{max_attempts: 2, base: 1ms}}
"""), env={"PORTCULLIS_SECRET_KEY": MASTER}, tracer=t.tracer,
        resolver=StaticResolver({"api.partner.test": [[ip_address("127.0.0.1")]]}))
    key = await gw.key("agent-7")
    r = await gw.client.get("/egress/partner/v1/things?page=2", headers={
        "X-API-Key": key, "X-Workflow-Id": "wf-1", "X-Execution-Id": "ex-1", "traceparent": INCOMING})
    assert r.status_code == 200 and r.headers["x-egress-attempts"] == "2"
    server, clients = await t.server_and_clients()
    trace_id, server_span_id = hex_ids(server)
    assert trace_id != TRACE  # the caller is not a trusted peer
    first, second = sorted(clients, key=lambda s: s.start_time or 0)
    for span, headers in ((first, seen[0]), (second, seen[1])):
        assert span.parent is not None and f"{span.parent.span_id:016x}" == server_span_id
        assert headers["traceparent"] == traceparent_of(span) and trace_id in headers["traceparent"]
        assert (span.attributes or {})["url.full"] == f"http://api.partner.test:{port}/v1/things"
    assert dict(first.attributes or {})["http.response.status_code"] == 503
    assert dict(first.attributes or {})["error.type"] == "503" and "http.request.resend_count" not in (first.attributes or {})
    assert dict(second.attributes or {})["http.response.status_code"] == 200
    assert dict(second.attributes or {})["http.request.resend_count"] == 1
    assert (server.attributes or {})["http.route"] == "/egress/{egress_route}/{egress_path:path}"
    [record] = await gw.audit_records()
    assert record["trace_id"] == trace_id and record["egress"]["attempts"] == 2
