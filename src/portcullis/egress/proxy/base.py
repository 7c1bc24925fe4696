"""The proxy door's contracts: what the listener asks of the gateway (``ProxyBackend``), and the values it hands over.

Why a Protocol here: the listener (framing, ``Proxy-Authorization``, tunnels, TLS interception) is
transport work that must not know how the gateway spends budgets, injects credentials or writes
audit records; the gateway's egress pipeline implements ``ProxyBackend``, and tests implement it
over the same real pieces (the SSRF guard with an injected resolver, the API key verifier, local
upstream servers). Every value crossing the seam is a frozen dataclass: no tuples, no sentinels.

What the backend decides and the listener never does: who the caller is, whether a destination
may be reached and at which address, what a call costs. What the listener decides and the
backend never sees: bytes on the wire, sizes and time bounds, the shape of every refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Protocol

from portcullis.identity.principal import Principal
from portcullis.pipeline.handler import BodyStream
from portcullis.server.base import Refusal

__all__ = [
    "ForwardRequest",
    "ForwardResponse",
    "IpAddress",
    "ProxyBackend",
    "ProxyCredentials",
    "ProxyIdentity",
    "TunnelGrant",
    "TunnelMode",
    "TunnelRecord",
    "TunnelRefused",
    "TunnelRequest",
]

IpAddress = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class ProxyCredentials:
    """What ``Proxy-Authorization`` carried, parsed (``auth.parse_proxy_authorization``).

    ``scheme`` is ``basic`` or ``bearer``; ``api_key`` the key as presented (not yet verified);
    ``workflow_id`` and ``execution_id`` the call context from the Basic user name (or from
    ``X-Workflow-Id`` / ``X-Execution-Id`` on the proxy request): always both.
    """

    scheme: str
    api_key: str = field(repr=False)
    workflow_id: str
    execution_id: str


@dataclass(frozen=True, slots=True)
class ProxyIdentity:
    """The verified caller of one proxy connection or tunnel: the key's consumer (the budgets' user)
    and the call context every call through it is charged to."""

    consumer_id: str
    key_id: str | None
    workflow_id: str
    execution_id: str
    principal: Principal | None = field(default=None, repr=False)  # for routes whose full runs need scopes


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """One HTTP request to send through the egress pipeline: an absolute-form request on the proxy,
    or a request read inside a tunnel (then ``url`` is built from the tunnel's host and port)."""

    identity: ProxyIdentity
    method: str
    url: str  # absolute, as checked by the listener: scheme://host[:port]/path?query
    headers: Sequence[tuple[bytes, bytes]]  # the client's, minus hop-by-hop and Proxy-* fields
    body: bytes
    request_id: str
    client_ip: str
    tunnel: TunnelMode | None = None  # read inside a tunnel (intercept or read), else absolute-form


@dataclass(frozen=True, slots=True)
class ForwardResponse:
    """The answer to relay: a provider's response, or a refusal already rendered as a problem document.

    A ``BodyStream`` body (a streamed answer) is relayed chunk by chunk as it arrives (chunked on
    HTTP/1.1) and closed by the listener whatever happens; a chunk iterator that raises an
    ``UpstreamError`` cuts the client's connection, the only honest end of a cut body.
    """

    status: int
    headers: Sequence[tuple[bytes, bytes]]  # framing fields are the listener's own, never these
    body: bytes | BodyStream


@dataclass(frozen=True, slots=True)
class TunnelRequest:
    """A ``CONNECT host:port`` asking for a tunnel."""

    identity: ProxyIdentity
    host: str  # lower-case name, or an IP literal's text
    port: int
    request_id: str
    client_ip: str
    headers: Sequence[tuple[bytes, bytes]] = ()  # the CONNECT's, minus hop-by-hop and Proxy-* (X-Run-Mode…)


class TunnelMode(StrEnum):
    """What the door does with a tunnel's bytes.

    ``splice``: copies them, unread, to the checked address (an ``https`` route); ``intercept``:
    ends the client's TLS with a leaf from the gateway's CA and reads the requests inside (an
    ``https`` route with ``intercept: true``); ``read``: reads the plain HTTP requests inside (an
    ``http`` route, which clients such as undici reach through ``CONNECT`` too). In the last two,
    every request is a ``ForwardRequest``: the pipeline checks, pins and charges each one.
    """

    SPLICE = "splice"
    INTERCEPT = "intercept"
    READ = "read"


@dataclass(frozen=True, slots=True)
class TunnelGrant:
    """The backend's yes to a tunnel.

    ``addresses``: for ``splice``, the addresses the SSRF guard checked, in order of preference:
    the listener connects to these and never resolves the name again (DNS rebinding). Empty for
    the other modes (nothing is dialled by the door). ``route``: the egress route it belongs to.
    """

    route: str
    mode: TunnelMode
    addresses: tuple[IpAddress, ...] = ()
    connect_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class TunnelRecord:
    """One finished (or refused) tunnel, for the audit: one record per ``CONNECT``.

    ``decision`` is ``allowed`` for a tunnel that was opened, or the refusal (``egress_refused:…``,
    ``auth:…``, ``upstream_error:…``); ``ended`` says how an opened tunnel ended (``closed``,
    ``idle_timeout``, ``max_duration``, ``client_gone``, ``upstream_gone``, ``tls_handshake_failed``,
    or ``cancelled`` when the listener stopped). ``bytes_up``: client to upstream; ``bytes_down``:
    upstream to client (TLS bytes when spliced; request and response bytes when read).
    """

    request_id: str
    client_ip: str
    host: str
    port: int
    status: int
    decision: str
    duration_s: float
    identity: ProxyIdentity | None = None
    route: str | None = None
    address: str | None = None  # the pinned address the tunnel connected to
    mode: TunnelMode | None = None
    bytes_up: int = 0
    bytes_down: int = 0
    ended: str = ""
    requests: int = 0  # intercept and read modes: requests read inside


class TunnelRefused(Exception):
    """The backend's no to a tunnel, already rendered (``answer``: the pipeline's problem document,
    as every door renders it) with the audit ``decision``. The listener relays and records it."""

    def __init__(self, answer: ForwardResponse, decision: str) -> None:
        super().__init__(decision)
        self.answer = answer
        self.decision = decision


class ProxyBackend(Protocol):
    """What the proxy listener needs from the gateway. Every method runs on the event loop.

    Refusals are raised as Portcullis errors (``ClientError`` and ``UpstreamError`` subclasses, such
    as ``Unauthenticated``, ``EgressDenied``, ``RateLimited``, ``BudgetExhausted``); the listener
    renders them as problem documents with the request id and records them. Any other exception is
    a fault: the listener answers 500 ``internal`` and logs it.
    """

    async def authenticate(self, credentials: ProxyCredentials, *, client_ip: str, request_id: str) -> ProxyIdentity:
        """Verify the API key (raise ``Unauthenticated`` with an audit reason) and name the context."""
        ...

    async def forward(self, request: ForwardRequest) -> ForwardResponse:
        """Run one request through the egress pipeline of the route covering ``request.url``.

        The backend records what it answers (audit, metrics) as its other doors do, its refusals
        included when it returns them rendered. A Portcullis error it raises instead is rendered
        by the listener and recorded through ``refused``.
        """
        ...

    async def admit_tunnel(self, request: TunnelRequest) -> TunnelGrant:
        """Decide a tunnel: match the host and port to a route; for ``splice``, check and pin the
        address and spend the route's rate limits and budgets once (the other modes are charged per
        request). Raise the refusal (``TunnelRefused``, or a Portcullis error for the listener to
        render); the listener records it in the tunnel's record."""
        ...

    def tunnel_closed(self, record: TunnelRecord) -> None:
        """Record a finished or refused tunnel (one audit record per ``CONNECT``). Must not raise."""
        ...

    def refused(self, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
        """Record a request the listener refused itself (framing, size, time, authentication, no
        route); return extra headers for its problem document. Must not raise."""
        ...
