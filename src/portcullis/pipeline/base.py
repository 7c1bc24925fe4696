"""The policy contract: what one step of the ingress pipeline is, and what it may decide.

Why fixed stages instead of integer priorities: security order is not a tuning knob. Shield runs
before authentication (cheap refusals before any store lookup), authentication before
authorization, limits after identity is known, body validation last (an unauthenticated caller
never makes the gateway parse a body). Within a stage, config order holds.

Decisions are return values (``Reject``, ``Respond``); exceptions are for faults.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext, ResponseHead

__all__ = ["Decision", "Policy", "PolicyBase", "Reject", "Respond", "Stage"]


class Stage(IntEnum):
    """Fixed security order of the request path."""

    SHIELD = 1
    AUTHENTICATE = 2
    AUTHORIZE = 3
    LIMIT = 4
    VALIDATE = 5
    RESPOND = 6


@dataclass(frozen=True, slots=True)
class Reject:
    """End the request with a generic error. ``decision`` goes to the audit, never to the client."""

    code: ErrorCode
    decision: str
    headers: tuple[tuple[bytes, bytes], ...] = ()
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Respond:
    """End the request with a local answer (a CORS preflight)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    decision: str = "allowed"


Decision = Reject | Respond


class Policy(Protocol):
    """One step of a route's chain. Built once per config load; called on every request."""

    name: str
    stage: Stage

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        """Inspect the request; return None to go on, or a decision that ends it."""
        ...

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        """Edit the response head. Runs in reverse order for every policy whose on_request ran."""
        ...


class PolicyBase:
    """No-op defaults, so a policy implements only the phase it cares about."""

    name: str = "policy"
    stage: Stage = Stage.RESPOND

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        return None

    def on_response(self, ctx: RequestContext, head: ResponseHead) -> None:
        return None
