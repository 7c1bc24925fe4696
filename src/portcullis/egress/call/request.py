"""What a door hands the egress pipeline, and what the pipeline answers when a call was sent."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import BudgetDecision, CallContext
from portcullis.egress.run_mode import RunMode
from portcullis.http.headers import RawHeaders
from portcullis.identity.principal import Principal
from portcullis.observability.tracing import ServerTrace
from portcullis.pipeline.handler import BodyStream

__all__ = ["CallContext", "EgressRequest", "EgressResult", "TunnelAdmission"]


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class EgressRequest:
    route: str
    method: str
    path_and_query: str  # relative to the route's base URL, e.g. "/repos/acme/app?state=open"
    context: CallContext
    # The caller's, as the door received them (bytes: the rules compare bytes, and the HTTP and proxy
    # doors have nothing else); filtered here.
    headers: RawHeaders = field(default_factory=list)
    body: bytes | None = None
    request_id: str = ""  # the door's, for the problem document and the security events this call causes
    client_ip: str = "in-process"  # the caller's address at the HTTP and proxy doors
    trace: ServerTrace | None = None  # the door's request span; None: in-process (the caller's current span)
    principal: Principal | None = None  # the authenticated caller, for full_run requirements (None: in-process)
    run_mode: RunMode | None = None  # the door's context (the transport's); None: X-Run-Mode, else the default


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class EgressResult:
    status: int
    headers: RawHeaders  # lower-case names, the bytes as the provider sent them (or the gateway's report's)
    body: bytes | BodyStream  # a stream: handed on as it arrives (a streamed LLM answer)
    attempts: int
    budget: BudgetDecision
    breaker: BreakerState
    host: str = ""
    cost: float = 0.0
    secrets: tuple[str, ...] = ()  # vault secrets injected into the call, by name (for the audit)
    trace_id: str | None = None  # the trace of the last attempt's traceparent, if it carried one
    run_mode: RunMode = RunMode.FULL_RUN  # validate_only: the body is the gateway's report, nothing was sent
    llm: dict[str, Any] | None = None  # an LLM route's tokens and cost, for the audit (final once a stream ends)


@dataclass(frozen=True, slots=True)
class TunnelAdmission:
    """A proxy tunnel the pipeline let open: the addresses it checked (dial these, never the name),
    what it was charged once for the whole tunnel, and the route's connect timeout."""

    addresses: tuple[IPv4Address | IPv6Address, ...]
    budget: BudgetDecision
    cost: float
    connect_timeout_s: float
