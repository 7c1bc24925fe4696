"""OTLP export end to end: a real ``portcullis serve`` process POSTs its spans to a collector on 127.0.0.1.

The collector is a small aiohttp server; each body is parsed with the OTLP protobuf classes that
the exporter itself depends on (``opentelemetry-proto``). The batch delay is an hour, so whatever
arrives was sent by the flush at shutdown: stopping the gateway loses no span.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from tests.cluster import start
from tests.conftest import PEPPER, UpstreamServer

from portcullis.testing import catch_all, serve_app


@dataclass
class Collector:
    port: int = 0
    posts: list[tuple[str, str, dict[str, str], ExportTraceServiceRequest]] = field(default_factory=list)

    def spans(self) -> list[tuple[dict[str, str], Span]]:
        """Every span received, with its resource's attributes."""
        out = []
        for _, _, _, request in self.posts:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    out.extend((resource, span) for span in scope_spans.spans)
        return out


@pytest.fixture
async def collector() -> AsyncIterator[Collector]:
    c = Collector()

    async def handle(request: web.Request) -> web.Response:
        body = ExportTraceServiceRequest()
        body.ParseFromString(await request.read())
        c.posts.append((request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body))
        return web.Response(status=200, content_type="application/x-protobuf")

    async with serve_app(catch_all(handle)) as port:
        c.port = port
        yield c


def config(upstream_url: str, collector_port: int, *, workers: int = 1) -> str:
    return f"""
version: 1
listen: {{host: 127.0.0.1, port: 0, workers: {workers}, graceful_timeout: 10s}}
admin: {{host: 127.0.0.1, port: 0}}
keys: {{pepper: "{PEPPER}"}}
store: {{url: "sqlite:///gw.db"}}
audit: {{file: audit.jsonl, flush_interval: 0.1s}}
tracing:
  enabled: true
  service_name: edge-gateway
  exporter:
    endpoint: "http://127.0.0.1:{collector_port}"
    headers: {{X-Collector-Key: "${{COLLECTOR_KEY}}"}}
    schedule_delay: 1h
upstreams:
  api: {{url: "{upstream_url}"}}
routes:
  - {{name: open, path: "/open/{{rest:path}}", upstream: api, auth: none}}
"""


async def test_a_serve_process_exports_its_spans_over_otlp_http_when_it_stops(
    tmp_path: Path, upstream: UpstreamServer, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR_KEY", "collector-secret")
    served = await start(tmp_path, config(upstream.url, collector.port))
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(served.base + "/open/a")
            assert r.status_code == 200
        assert collector.posts == []  # batched: nothing is sent per request
    finally:
        await served.stop()
    assert served.proc.returncode == 0
    [(method, path, headers, _)] = collector.posts
    assert (method, path) == ("POST", "/v1/traces")
    assert headers["content-type"] == "application/x-protobuf" and headers["x-collector-key"] == "collector-secret"
    spans = collector.spans()
    by_kind = {span.kind: (resource, span) for resource, span in spans}
    assert len(spans) == 2 and set(by_kind) == {Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT}
    resource, server = by_kind[Span.SPAN_KIND_SERVER]
    _, client_span = by_kind[Span.SPAN_KIND_CLIENT]
    assert resource["service.name"] == "edge-gateway" and resource["service.instance.id"]
    assert server.name == "GET /open/{rest:path}"
    attributes = {a.key: a.value for a in server.attributes}
    assert attributes["http.route"].string_value == "/open/{rest:path}"
    assert attributes["http.response.status_code"].int_value == 200
    assert attributes["portcullis.request_id"].string_value == r.headers["x-request-id"]
    assert client_span.parent_span_id == server.span_id and client_span.trace_id == server.trace_id
    sent = upstream.seen[-1].header("traceparent")
    assert sent is not None and sent.split("-")[1:3] == [client_span.trace_id.hex(), client_span.span_id.hex()]
    [record] = await asyncio.to_thread(served.audit_records)
    assert record["trace_id"] == server.trace_id.hex()


async def test_with_two_workers_each_exports_the_spans_of_the_requests_it_served(
    tmp_path: Path, upstream: UpstreamServer, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLLECTOR_KEY", "k")
    served = await start(tmp_path, config(upstream.url, collector.port, workers=2))
    try:
        fresh = httpx.Limits(max_keepalive_connections=0)  # a connection per request: the kernel spreads them
        async with httpx.AsyncClient(timeout=20, limits=fresh) as client:
            results = await asyncio.gather(*(client.get(served.base + f"/open/{i}") for i in range(40)))
        assert [r.status_code for r in results] == [200] * 40
    finally:
        await served.stop()
    assert served.proc.returncode == 0
    # Every request's two spans arrive exactly once (flushed by each worker at shutdown), and a
    # request's server and client span come from the same process (service.instance.id).
    by_trace: dict[bytes, set[tuple[str, int]]] = {}
    for resource, span in collector.spans():
        by_trace.setdefault(span.trace_id, set()).add((resource["service.instance.id"], span.kind))
    assert len(by_trace) == 40
    for kinds in by_trace.values():
        assert len(kinds) == 2 and len({instance for instance, _ in kinds}) == 1
    records = await asyncio.to_thread(served.audit_records)
    assert sorted(str(r["trace_id"]) for r in records) == sorted(t.hex() for t in by_trace)
    for post in collector.posts:  # each export request is one worker's batch
        assert len({resource["service.instance.id"] for resource, _ in Collector(posts=[post]).spans()}) == 1
