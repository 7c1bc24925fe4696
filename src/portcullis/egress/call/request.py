"""What a door hands the egress pipeline, and what the pipeline answers when a call was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import BudgetDecision, CallContext
from portcullis.observability.tracing import ServerTrace

__all__ = ["BodyStream", "CallContext", "EgressRequest", "EgressResult"]


class BodyStream(Protocol):
    """An answer's body still arriving: iterate it, then ``aclose()`` it whatever happened."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EgressRequest:
    route: str
    method: str
    path_and_query: str  # relative to the route's base URL, e.g. "/repos/acme/app?state=open"
    context: CallContext
    headers: list[tuple[str, str]] = field(default_factory=list)  # the caller's, as sent: filtered here
    body: bytes | None = None
    request_id: str = ""  # the door's, for the problem document and the security events this call causes
    client_ip: str = "in-process"  # the caller's address at the HTTP and proxy doors
    trace: ServerTrace | None = None  # the door's request span; None: in-process (the caller's current span)


@dataclass(frozen=True, slots=True)
class EgressResult:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    attempts: int
    budget: BudgetDecision
    breaker: BreakerState
    host: str = ""
    cost: float = 0.0
    secrets: tuple[str, ...] = ()  # vault secrets injected into the call, by name (for the audit)
    trace_id: str | None = None  # the trace of the last attempt's traceparent, if it carried one
    stream: BodyStream | None = None  # a streamed answer's body (``body`` is then empty): relay, then close
    llm: dict[str, Any] | None = None  # an LLM route's tokens and cost, for the audit (final once the body ends)
