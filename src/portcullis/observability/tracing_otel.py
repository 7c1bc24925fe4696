"""The OpenTelemetry side of tracing: spans with the HTTP semantic conventions, exported over OTLP/HTTP.

Why this is the only module that imports OpenTelemetry: ``tracing.enabled`` is optional and the
extra may not be installed; ``tracing.build_tracer`` imports this module only when tracing is on,
and an import-linter contract keeps every other module from importing ``opentelemetry``.

Decisions:

- **Trust.** A valid incoming context is continued only from a socket peer in
  ``tracing.trusted_peers`` (the same CIDR matcher as ``trusted_proxies``). From anyone else the
  gateway starts a new trace, and keeps a valid incoming context as a span *link* (marked
  ``portcullis.trace.untrusted``): an operator can still follow a partner's call into the gateway,
  but a client can neither join our trace, choose our trace id nor force sampling on (the
  semantic conventions' advice for public endpoints).
- **Sampling.** ``ParentBased(TraceIdRatioBased(sample_ratio))``: a trusted parent's sampled flag
  wins, new traces are sampled by ratio. An unsampled span still gets ids, so the upstream always
  receives a well-formed ``traceparent`` (flag 00).
- **No global provider.** The provider is the gateway's own object, not ``set_tracer_provider``:
  an application embedding the in-process egress transport keeps its own setup, and its current
  span (if any) parents an in-process egress attempt.
- **Export.** A ``BatchSpanProcessor`` sends batches from its own thread (the event loop only
  appends to a queue; a full queue drops spans, never blocks). ``aclose`` flushes and shuts down in
  a worker thread, bounded by the exporter timeout. Each worker process builds its own tracer.
- **Attributes.** Server span: ``http.request.method``, ``url.path``, ``url.scheme``,
  ``http.route`` (the route's template, never the raw path), ``http.response.status_code``,
  ``server.address`` / ``server.port``, ``client.address``, ``network.protocol.version``,
  ``error.type`` for 5xx; the gateway's own facts as ``portcullis.request_id``,
  ``portcullis.decision`` (the audit decision's kind, such as ``auth_failed``) and
  ``portcullis.problem.code`` (the problem document's code, such as ``limit.exceeded``). Client
  spans: method, ``server.address`` / ``server.port``, ``url.full``, status, ``error.type`` for a
  4xx/5xx or a failure, and ``http.request.resend_count`` on egress retries.

What it refuses to do: put free text on a span (no query string, no headers, no decision reason:
those can hold credentials and are masked in the audit instead).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence

from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from portcullis.config.model import TracingConfig
from portcullis.errors import ErrorCode
from portcullis.http.client_ip import ClientAddressResolver
from portcullis.observability.tracing import ClientTrace, RequestFacts, ServerTrace
from portcullis.observability.tracing_context import InboundTrace, read_inbound

__all__ = ["OtelTracer"]

log = logging.getLogger("portcullis.tracing")

Headers = Sequence[tuple[bytes, bytes]]
_EMPTY = otel_context.Context()  # a root: no ambient span of this process becomes the parent


def _span_context(inbound: InboundTrace) -> SpanContext:
    pairs: list[tuple[str, str]] = []
    if inbound.tracestate:
        for member in inbound.tracestate.decode("ascii").split(","):
            key, _, value = member.partition("=")
            pairs.append((key, value))
    parent = inbound.parent
    return SpanContext(
        int(parent.trace_id, 16), int(parent.parent_id, 16), is_remote=True,
        trace_flags=TraceFlags(parent.flags & TraceFlags.SAMPLED), trace_state=TraceState(pairs),
    )


def _headers_of(span: Span) -> list[tuple[bytes, bytes]]:
    sc = span.get_span_context()
    out = [(b"traceparent", f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags) & 0xFF:02x}".encode())]
    if sc.trace_state:
        out.append((b"tracestate", sc.trace_state.to_header().encode("ascii")))
    return out


def _split_host(host: str) -> tuple[str, int | None]:
    """``Host`` as (address, port): ``[::1]:8080``, ``example.com:8080`` or ``example.com``."""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        address, _, port = host.partition(":")
    return address, int(port) if port.isdigit() and len(port) <= 5 else None


class _ClientSpan:
    __slots__ = ("_headers", "_span", "trace_id")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._headers = _headers_of(span)
        self.trace_id = f"{span.get_span_context().trace_id:032x}"

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers

    def finish(self, status: int | None, error: str | None = None) -> None:
        span = self._span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 400 and error is None:
                error = str(status)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class _ServerSpan:
    __slots__ = ("_method", "_span", "_tracer", "trace_id")

    def __init__(self, tracer: OtelTracer, span: Span, method: str) -> None:
        self._tracer = tracer
        self._span = span
        self._method = method
        self.trace_id = f"{span.get_span_context().trace_id:032x}"

    @property
    def span(self) -> Span:
        return self._span

    def upstream(self, *, method: str, address: str, port: int, url: str) -> ClientTrace:
        return self._tracer.client_span(self._span, method=method, address=address, port=port, url=url)

    def finish(
        self, *, status: int, path: str, route: str | None, decision: str, problem: ErrorCode | None,
        http_version: str,
    ) -> None:
        span = self._span
        if span.is_recording():
            attributes: dict[str, str | int] = {
                "http.response.status_code": status, "network.protocol.version": http_version,
                "url.path": path,  # canonical (what was routed and forwarded); empty if the target was refused
                "portcullis.decision": decision.split(":", 1)[0],
            }
            if route is not None:
                attributes["http.route"] = route
                span.update_name(f"{self._method} {route}")
            if problem is not None:
                attributes["portcullis.problem.code"] = problem.value
            if status >= 500:
                attributes["error.type"] = str(status)
                span.set_status(Status(StatusCode.ERROR))
            span.set_attributes(attributes)
        span.end()


class OtelTracer:
    """The ``Tracer`` over one OpenTelemetry ``TracerProvider`` (this process's)."""

    enabled = True

    def __init__(self, config: TracingConfig, *, exporter: SpanExporter | None = None) -> None:
        """``exporter``: tests pass the SDK's in-memory exporter; the default is OTLP/HTTP from the config."""
        cfg = config.exporter
        if exporter is None:
            exporter = OTLPSpanExporter(
                endpoint=cfg.traces_url, timeout=cfg.timeout,
                headers={name: value.get_secret_value() for name, value in cfg.headers.items()},
            )
        self._timeout_s = cfg.timeout
        self._provider = TracerProvider(
            # Not Resource.create: its detectors run in a thread pool the loop would wait on, and the
            # config is the one source of the service's identity.
            # service.instance.id: one per process, so each worker's spans say which worker made them.
            resource=Resource({"service.name": config.service_name, "service.instance.id": str(uuid.uuid4()),
                               "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry"}),
            sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)),
        )
        self._provider.add_span_processor(BatchSpanProcessor(
            exporter, max_queue_size=cfg.max_queue_size, schedule_delay_millis=cfg.schedule_delay * 1000,
            export_timeout_millis=cfg.timeout * 1000, max_export_batch_size=min(512, cfg.max_queue_size),
        ))
        self._tracer = self._provider.get_tracer("portcullis")
        self._trusted = ClientAddressResolver(config.trusted_peers)

    def force_flush(self) -> bool:
        """Export every finished span now (blocking: for tests and shutdown, never on the event loop)."""
        return self._provider.force_flush(int(self._timeout_s * 1000))

    def server(self, request: RequestFacts, *, peer: str | None, server_port: int | None) -> ServerTrace:
        inbound = read_inbound(request.headers)
        parent = _EMPTY
        links: tuple[Link, ...] = ()
        if inbound is not None:
            incoming = _span_context(inbound)
            if self._trusted.is_trusted(peer):
                parent = set_span_in_context(NonRecordingSpan(incoming), _EMPTY)
            else:
                links = (Link(incoming, {"portcullis.trace.untrusted": True}),)
        attributes: dict[str, str | int] = {
            "http.request.method": request.method, "url.scheme": request.scheme,
            "client.address": request.client_ip, "portcullis.request_id": request.request_id,
        }
        port = server_port
        if request.host:
            address, host_port = _split_host(request.host)
            attributes["server.address"] = address
            port = host_port if host_port is not None else port
        if port is not None:
            attributes["server.port"] = port
        span = self._tracer.start_span(
            request.method, context=parent, kind=SpanKind.SERVER, attributes=attributes, links=links,
        )
        return _ServerSpan(self, span, request.method)

    def client_span(self, parent: Span | None, *, method: str, address: str, port: int, url: str,
                    attempt: int = 1) -> _ClientSpan:
        """A CLIENT span under ``parent`` (None: the caller's current span, if any)."""
        attributes: dict[str, str | int] = {
            "http.request.method": method, "server.address": address, "server.port": port,
            "url.full": url.split("?", 1)[0],  # no query: it can hold credentials
            "network.protocol.version": "1.1",
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        context = set_span_in_context(parent, _EMPTY) if parent is not None else None
        return _ClientSpan(self._tracer.start_span(method, context=context, kind=SpanKind.CLIENT,
                                                   attributes=attributes))

    def egress_attempt(
        self, parent: ServerTrace | None, caller_headers: Headers, *, method: str, url: str, host: str,
        port: int, attempt: int,
    ) -> ClientTrace:
        span = parent.span if isinstance(parent, _ServerSpan) else None
        return self.client_span(span, method=method, address=host, port=port, url=url, attempt=attempt)

    async def aclose(self) -> None:
        # shutdown() flushes the queue and joins the exporter thread: blocking, so off the loop.
        try:
            await asyncio.wait_for(asyncio.to_thread(self._provider.shutdown), self._timeout_s + 1)
        except TimeoutError:
            log.warning("tracing: spans still queued at shutdown were not exported within %ss", self._timeout_s)
