"""``RouteHandler``: the last step of a route's chain when the route answers itself.

Why a protocol here: the egress door is served on an ingress route (the caller authenticates,
is authorized and rate-limited like any caller), but what it does after its chain is the egress
pipeline's business. The ingress app knows only this contract, so ingress and egress never import
each other; the composition root (``portcullis.gateway``) puts the egress door on its route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from portcullis.http.context import RequestContext
from portcullis.observability.tracing import ServerTrace

__all__ = ["BodyStream", "HandlerAnswer", "RouteHandler"]


class BodyStream(Protocol):
    """A body handed on as it arrives (a streamed LLM answer): chunks, then ``aclose`` whatever
    happened, so what the stream holds (a connection, a budget reservation) is settled once.
    A chunk iterator that raises an ``UpstreamError`` part-way says the body was cut."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class HandlerAnswer:
    """The response a handler answers with. ``local``: the gateway made it (a problem document).
    A ``bytes`` body carries its content-length in ``headers``; a ``BodyStream`` has none, and is
    sent chunk by chunk as it arrives (chunked on HTTP/1.1)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | BodyStream
    local: bool = False


class RouteHandler(Protocol):
    async def handle(self, ctx: RequestContext, trace: ServerTrace) -> HandlerAnswer:
        """Answer the request whose chain has passed. Sets ``ctx.decision`` (and ``ctx.problem``,
        ``ctx.upstream_status``, ``ctx.egress``) for the audit record the app writes."""
        ...

    async def aclose(self) -> None: ...
