"""``EgressOutcome``: the one answer to an egress call, which every door renders as it is.

Why one type: the HTTP door, the in-process transport and the proxy door must answer the same
decision with the same status, problem document, headers, metrics and audit decision; when each
door mapped errors itself they drifted (one door's 403 carried another code's body, one rounded
``Retry-After`` up and the other to nearest). A door now only adds what belongs to its transport:
the HTTP door its request id header and security headers, the transport an ``httpx.Response``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portcullis.egress.budgets import budget_amount
from portcullis.egress.call.request import EgressRequest, EgressResult
from portcullis.egress.run_mode import RunMode
from portcullis.errors import (
    AuditBackpressure,
    Blocked,
    BudgetExhausted,
    CircuitOpen,
    ClientError,
    ErrorCode,
    MalformedRequest,
    Shed,
    UpstreamError,
    retry_after_of,
)
from portcullis.http.headers import HOP_BY_HOP, connection_tokens
from portcullis.http.problem import render_problem
from portcullis.limiting.headers import retry_after_value
from portcullis.pipeline.handler import BodyStream

__all__ = ["EgressOutcome", "answered", "is_refusal", "refused"]

# Besides the provider's hop-by-hop headers and cookies (dropped when read): a door adds its own
# Date and X-Request-Id, and the length is the body's as handed over.
_DROP = HOP_BY_HOP | {b"date", b"x-request-id", b"set-cookie", b"content-length"}


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class EgressOutcome:
    status: int
    headers: list[tuple[bytes, bytes]]  # lower-case names: what the caller receives, before the door's own
    body: bytes | BodyStream  # a stream has no content-length: each door hands it on as it arrives
    decision: str  # the audit record's decision: allowed, egress_refused:…, blocked:…, upstream_error:…
    audit: dict[str, Any]  # the audit record's ``egress`` fields
    problem: ErrorCode | None = None  # set when the gateway answered with a problem document
    result: EgressResult | None = None  # the call as sent, when it was


def context_fields(request: EgressRequest) -> dict[str, Any]:
    ctx = request.context
    return {"route": request.route, "workflow_id": ctx.workflow_id, "execution_id": ctx.execution_id}


def answered(request: EgressRequest, result: EgressResult) -> EgressOutcome:
    """The provider's answer, as every door hands it to the caller."""
    raw = result.headers  # lower-case names, the bytes the provider sent
    named = connection_tokens(raw)
    headers = [(k, v) for k, v in raw if k not in _DROP and k not in named]
    if isinstance(result.body, bytes):
        headers.append((b"content-length", b"%d" % len(result.body)))
    headers.append((b"x-egress-attempts", b"%d" % result.attempts))
    for name, left in result.budget.remaining.items():
        headers.append((b"x-budget-remaining", budget_left(name, left)))
    audit = {**context_fields(request), "host": result.host, "attempts": result.attempts,
             "breaker": result.breaker.value, "cost": result.cost,
             "budget_remaining": dict(result.budget.remaining), "secrets": list(result.secrets)}
    if result.run_mode is not RunMode.FULL_RUN:
        audit["run_mode"] = result.run_mode.value
    if result.llm is not None:
        audit["llm"] = result.llm  # the same dict: a stream's settlement completes it before the record is written
    decision = "validate_only" if result.run_mode is RunMode.VALIDATE_ONLY else "allowed"
    return EgressOutcome(result.status, headers, result.body, decision, audit, result=result)


def budget_left(name: str, left: float) -> bytes:
    """One ``X-Budget-Remaining`` value: ``name=left`` (``budgets.budget_amount``)."""
    return f"{name}={budget_amount(left)}".encode()


def refused(request: EgressRequest, exc: ClientError | UpstreamError, run_mode: RunMode | None = None) -> EgressOutcome:
    """A call refused or failed before an answer: a problem document, the same from every door.

    Only a budget's name is told to the caller (it must know which cap it hit); a guard's reason
    stays in the audit, or a prompt could use it to map internal DNS ("private" vs "no such name").
    """
    extra: tuple[tuple[bytes, bytes], ...] = ()
    wait = retry_after_of(exc)
    if wait is not None:
        extra = ((b"retry-after", retry_after_value(wait)),)
    detail = exc.detail if isinstance(exc, BudgetExhausted) else None
    status, headers, body = render_problem(exc.code, request.request_id, extra_headers=extra, detail=detail)
    audit = context_fields(request)
    if run_mode is not None and run_mode is not RunMode.FULL_RUN:
        audit["run_mode"] = run_mode.value
    return EgressOutcome(status, headers, body, decision_of(exc), audit, problem=exc.code)


def decision_of(exc: ClientError | UpstreamError) -> str:
    if isinstance(exc, Blocked | AuditBackpressure):
        return exc.reason  # blocked:<block id>, shed:audit_queue_full: as on ingress
    if isinstance(exc, MalformedRequest):
        return f"invalid_request:{exc.reason}"  # the caller's request itself, as on ingress
    if is_refusal(exc):
        return f"egress_refused:{exc.reason}"
    return f"upstream_error:{exc.reason}"


def is_refusal(exc: ClientError | UpstreamError) -> bool:
    """Refused by the gateway before the provider was asked: the caller's error, an open breaker or a
    full bulkhead (never a provider's failure, so never counted as one)."""
    return isinstance(exc, ClientError | CircuitOpen | Shed)
