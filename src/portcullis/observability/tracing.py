"""Tracing as the data path sees it: a ``Tracer`` that opens a server span per request and client
spans for the calls the gateway makes, and says which ``traceparent`` each outgoing request carries.

Why a facade with two implementations: tracing is an optional extra, and a gateway without it must
not pay for it, not even an import. ``build_tracer`` returns ``PassThroughTracer`` when
``tracing.enabled`` is false and only then imports ``tracing_otel`` (the one module that imports
OpenTelemetry). The off path costs one scan of the request headers for ``traceparent`` and, in the
common case of none, returns a shared constant.

With tracing off, the gateway is not a participant in the trace, so it passes on what it received,
but never a malformed header: a valid ``traceparent`` (and its ``tracestate`` if that is valid
too) is forwarded in its version-00 form; anything else is removed (both names are among the
headers the gateway sets, ``http.headers.GATEWAY_SET_HEADERS``, so no client copy crosses on its
own). A backend then never sees a value its tracing library could trip over, and a trace a caller
started still reaches the backend's own tracing. Nothing is refused for a bad trace context: the
spec says to restart the trace, not to fail the request.

The trace id a request belongs to (``ServerTrace.trace_id``) goes into its audit record; it is the
trace of the ``traceparent`` the upstream received, or None when there was none.

What it refuses to do: trust a caller's trace context by itself. Whose context is continued is the
``tracing.trusted_peers`` list's decision (``tracing_otel.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from portcullis.observability.tracing_context import InboundTrace, read_inbound

if TYPE_CHECKING:
    from portcullis.config.model import TracingConfig
    from portcullis.errors import ErrorCode

__all__ = [
    "NO_TRACE", "ClientTrace", "PassThroughTracer", "RequestFacts", "ServerTrace", "Tracer", "build_tracer",
]

Headers = Sequence[tuple[bytes, bytes]]


class RequestFacts(Protocol):
    """What a server span is told about its request (``http.context.RequestContext`` fits)."""

    request_id: str
    client_ip: str
    method: str
    host: str | None
    path: str
    scheme: str
    headers: list[tuple[bytes, bytes]]


class ClientTrace(Protocol):
    """One outgoing call (an upstream request or an egress attempt)."""

    @property
    def trace_id(self) -> str | None:
        """The trace of its ``traceparent`` (32 hex); None: it carries none."""
        ...

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """``traceparent`` (and ``tracestate``) for the outgoing request; empty: send none."""
        ...

    def finish(self, status: int | None, error: str | None = None) -> None:
        """End the span with the answer's status, or with a low-cardinality error kind."""
        ...


class ServerTrace(Protocol):
    """One request's server span (or its stand-in when tracing is off)."""

    @property
    def trace_id(self) -> str | None:
        """The trace this request belongs to (32 hex), for its audit record; None: none."""
        ...

    def upstream(self, *, method: str, address: str, port: int, url: str) -> ClientTrace:
        """Start the client span of the call to the route's upstream."""
        ...

    def finish(
        self, *, status: int, path: str, route: str | None, decision: str, problem: ErrorCode | None,
        http_version: str,
    ) -> None:
        """End the span: the status the client got, the route template, the gateway's decision."""
        ...


class Tracer(Protocol):
    """Opens spans; one per process (each worker has its own exporter)."""

    @property
    def enabled(self) -> bool: ...

    def server(self, request: RequestFacts, *, peer: str | None, server_port: int | None) -> ServerTrace:
        """The server span of one ingress request, continuing the incoming trace only from a trusted peer."""
        ...

    def egress_attempt(
        self, parent: ServerTrace | None, caller_headers: Headers, *, method: str, url: str, host: str,
        port: int, attempt: int,
    ) -> ClientTrace:
        """The client span of one egress attempt. ``parent``: the door's request; None: an in-process
        call, whose parent is the calling code's current span (if tracing is on)."""
        ...

    async def aclose(self) -> None:
        """Flush what is queued (bounded by the exporter timeout) and stop exporting."""
        ...


class _PassThrough:
    """Tracing off: forwards the request's own valid trace context, or nothing."""

    __slots__ = ("_headers", "trace_id")

    def __init__(self, inbound: InboundTrace | None) -> None:
        self._headers = inbound.headers() if inbound is not None else []
        self.trace_id = inbound.parent.trace_id if inbound is not None else None

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        return self._headers

    def upstream(self, *, method: str, address: str, port: int, url: str) -> ClientTrace:
        return self

    def finish(self, status: int | None = None, error: str | None = None, **_: object) -> None:
        return None


NO_TRACE = _PassThrough(None)
"""The stand-in for a request without a valid trace context, tracing off: shared, it holds nothing."""


class PassThroughTracer:
    """``tracing.enabled: false``: no spans, no OpenTelemetry; valid trace headers passed on unchanged."""

    enabled = False

    def server(self, request: RequestFacts, *, peer: str | None, server_port: int | None) -> ServerTrace:
        inbound = read_inbound(request.headers)
        return NO_TRACE if inbound is None else _PassThrough(inbound)

    def egress_attempt(
        self, parent: ServerTrace | None, caller_headers: Headers, *, method: str, url: str, host: str,
        port: int, attempt: int,
    ) -> ClientTrace:
        if isinstance(parent, _PassThrough):
            return parent
        inbound = read_inbound(caller_headers)
        return NO_TRACE if inbound is None else _PassThrough(inbound)

    async def aclose(self) -> None:
        return None


def build_tracer(config: TracingConfig) -> Tracer:
    """The process's tracer for ``config``: OpenTelemetry only when enabled (imported here, lazily)."""
    if not config.enabled:
        return PassThroughTracer()
    from portcullis.observability.tracing_otel import OtelTracer  # the optional extra: imported only here

    return OtelTracer(config)
