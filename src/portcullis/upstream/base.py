"""The upstream contract: send one request to a backend and stream the answer back.

Why a Protocol: the ingress client (``upstream/http1``, our own HTTP/1.1 client on httptools) is one
implementation; tests and a future egress client can bring others. Callers only ever see
``UpstreamError`` subclasses, never a client library's exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Timeouts", "Upstream", "UpstreamRequest", "UpstreamResponse"]


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class Timeouts:
    """Seconds: to connect, between reads, and for the whole exchange."""

    connect_s: float
    read_s: float
    total_s: float


@dataclass(slots=True)
class UpstreamRequest:
    method: str
    path_and_query: str
    headers: list[tuple[bytes, bytes]]  # lower-case names, already free of hop-by-hop headers
    body: AsyncIterator[bytes] | bytes | None


class UpstreamResponse(Protocol):
    """A response whose body is streamed; ``aclose`` must always be called."""

    status: int
    headers: list[tuple[bytes, bytes]]

    def complete_body(self) -> bytes | None:
        """The whole body if it has already arrived (the common small response), else ``None``.

        Lets the caller answer with one body message instead of a stream; it must then not iterate.
        """
        ...

    def iter_body(self) -> AsyncIterator[bytes]:
        """Body chunks as they arrive. Raises ``UpstreamError`` on timeout or a broken stream."""
        ...

    async def aclose(self) -> None:
        """Release the connection back to the pool (or drop it if the body was not read)."""
        ...


class Upstream(Protocol):
    """A pooled client for one backend."""

    async def send(self, request: UpstreamRequest, *, timeouts: Timeouts) -> UpstreamResponse:
        """Send ``request``; raise ``UpstreamTimeout``/``UpstreamUnavailable``/``UpstreamProtocolError``."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...
