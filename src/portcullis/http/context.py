"""Typed per-request state that every policy reads and writes.

Why a narrow facade over the ASGI scope (Kong's PDK idea): policies see canonical facts (the
canonical path, the resolved client address, the principal) and never the raw scope, so no policy
can accidentally route on one path and check another, or trust a forged header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from portcullis.errors import ErrorCode, PayloadTooLarge
from portcullis.identity.principal import Principal

if TYPE_CHECKING:
    from portcullis.server.tls import TlsPeer

__all__ = ["RequestContext", "ResponseHead"]

Receive = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class ResponseHead:
    """Status and headers of the response on its way out; response policies edit ``headers``."""

    status: int
    headers: list[tuple[bytes, bytes]]
    local: bool = False  # made by the gateway (an error or a local answer), not the upstream


@dataclass(slots=True, eq=False)
class RequestContext:
    """One request, as the pipeline sees it."""

    request_id: str
    client_ip: str
    method: str
    host: str | None
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    scheme: str
    started: float
    receive: Receive
    route_name: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    principal: Principal | None = None
    credential_presented: bool = False
    decision: str = "allowed"
    content_length: int | None = None
    max_body_bytes: int | None = None
    body: bytes | None = None
    body_consumed: bool = False
    body_too_large: bool = False
    upstream_status: int | None = None
    response_status: int | None = None  # set once the head went out: from then on an error can only cut the body
    bytes_out: int = 0
    bytes_in: int = 0
    response_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    strip_request_headers: set[bytes] = field(default_factory=set)
    egress: dict[str, Any] | None = None  # the egress door's call, for the audit record
    trace_id: str | None = None  # the W3C trace the upstream request belongs to, for the audit record
    problem: ErrorCode | None = None  # the code of the problem document the gateway answered with, if any
    peer: str | None = None  # the socket peer (``client_ip`` may be a forwarded address)
    tls: TlsPeer | None = None  # the connection's TLS facts (our server over TLS); the client certificate

    async def read_body(self) -> bytes:
        """Buffer the whole body, refusing more than ``max_body_bytes`` (413).

        Used only by policies that must see the body (JSON validation); otherwise the body is
        streamed to the upstream and counted on the way.
        """
        if self.body is not None:
            return self.body
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                self.bytes_in = size
                raise PayloadTooLarge("body_exceeds_limit")
            if chunk:
                chunks.append(chunk)
            more = message.get("more_body", False)
        self.body = b"".join(chunks)
        self.bytes_in = size
        self.body_consumed = True
        return self.body
