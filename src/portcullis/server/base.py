"""The server's contracts: the ASGI types it speaks, its scope extensions, and the hooks the app gives it.

Why here: ``portcullis.server`` is the front door and must not import the gateway behind it
(``ingress``, ``policies``, ``admin``, ``cli``, ``egress``; an import-linter contract holds that).
So the server names what it needs from the app as Protocols, and ingress implements them:

- ``BodyPlanner.body_plan(scope)``: what to do with this request's body (a ``BodyPlan``: the
  largest body it may carry, the route's ``max_body_bytes``, and whether it is streamed), asked
  once the head is parsed and before a byte of the body is read. A buffered body is read and
  checked whole before dispatch; a streamed one is dispatched with its head and reaches the app as
  it arrives, and a refusal the server makes mid-body (too large, bad framing, too slow) reaches
  the app as a ``ClientError`` raised by ``receive`` (the app answers it and owns its audit).
- ``RefusalSink.refused(refusal)``: told of every request the server refuses itself (parser,
  framing, size, timeout, connection cap), so the refusal is audited and counted like any other;
  it returns the extra response headers (security headers) for the problem document.

What it refuses to do: carry policy. The server decides framing, sizes and time; what a refusal
means for audit and metrics is the app's business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from portcullis.errors import ErrorCode

__all__ = [
    "ABORT_KEY",
    "RAW_TARGET_KEY",
    "ASGIApp",
    "BodyPlan",
    "BodyPlanner",
    "ClientDisconnected",
    "Headers",
    "Message",
    "Receive",
    "Refusal",
    "RefusalSink",
    "Scope",
    "Send",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# ``scope["extensions"][RAW_TARGET_KEY] == {"target": b"http://h/p"}`` for a target that is not
# origin-form, so the canonicalizer can compare its authority with Host (RFC 9112 section 3.2.2).
RAW_TARGET_KEY = "portcullis.raw_target"
# ``scope["extensions"][ABORT_KEY]["abort"]()`` ends the connection where the response stands: the
# honest answer to a body cut after the head went out (RFC 9112 section 8), with nothing logged.
ABORT_KEY = "portcullis.abort"


@dataclass(frozen=True, slots=True)
class Refusal:
    """One request (or connection) the server refused before the app saw it.

    ``reason`` is a fixed token for the audit (``head_too_large``, ``timeout_head``, ...), never
    client text. ``answered`` says whether a problem document could still be sent. ``method``,
    ``target`` and ``headers`` hold what was parsed before the refusal (possibly nothing).
    """

    code: ErrorCode
    status: int
    reason: str
    kind: str  # the audit decision's kind: invalid_request, server_timeout, connection_cap
    request_id: str
    peer: str | None
    scheme: str
    duration_s: float  # from the request's (or connection's) first moment to the refusal
    answered: bool
    method: str = ""
    target: bytes = b""
    headers: Headers = field(default_factory=list)
    bytes_in: int = 0

    @property
    def decision(self) -> str:
        return f"{self.kind}:{self.reason}"


class ClientDisconnected(OSError):
    """``send`` was called for a client that is gone: the app should stop producing its response.

    The ASGI spec (2.4) asks a server to raise a server-specific ``OSError`` subclass here rather
    than drop the message silently: an app streaming an upstream answer otherwise reads the rest of
    it for nobody, holding the upstream connection. ``reason`` is a fixed token for the audit:
    ``gone`` (the client closed or reset), ``write_timeout`` (it left its answer unread too long)
    or ``stalled`` (cut to free what its response held; see ``ServerLimits.max_stalled_responses``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"client disconnected: {reason}")
        self.reason = reason


class RefusalSink(Protocol):
    """Where the server reports its own refusals (implemented by the ingress app)."""

    def refused(self, refusal: Refusal) -> Sequence[tuple[bytes, bytes]]:
        """Record ``refusal`` (audit, metrics); return extra headers for its problem document.

        Called on the event loop; must not block or raise (the server logs and goes on if it does).
        """
        ...


@dataclass(frozen=True, slots=True)
class BodyPlan:
    """What the server does with one request's body.

    ``limit``: the largest body in bytes (``None``: the listener's default). ``stream``: dispatch
    the request as soon as its head is checked and hand the body over as it arrives (nginx's
    ``proxy_request_buffering off``) instead of reading and checking it whole first.
    """

    limit: int | None = None
    stream: bool = False


class BodyPlanner(Protocol):
    """How the app wants a request's body handled (implemented by the ingress app, per route)."""

    def body_plan(self, scope: Scope) -> BodyPlan:
        """The plan for this request's body. Called on the event loop once the head is parsed;
        must not block. If it raises, the body is buffered within the listener's default limit."""
        ...
