"""Security events: one audit record of class ``security`` per operator act, refusal or secret use.

Why a record of its own kind rather than a log line: an auditor asks "who revoked this key, from
where, and did it work?" and "who read the Stripe key last week?", and the answer must sit in the
same tamper-evident trail as the traffic, kept for its own retention (a year by default, against
90 days for request records). Every admin API call that changes something, every refused admin
authentication, every CLI command that writes the store directly and every vault secret the
egress path decrypts is one of these.

The record is an ordinary ``AuditRecord`` (same sinks, same masking, same chain) with
``record_class="security"``, ``decision`` = ``<action>:<outcome>`` for a quick filter, and
``event`` holding the details: ``action``, ``outcome``, ``actor`` (``token:<id>``,
``oidc:<issuer>:<subject>``, ``cli:<os user>``, ``egress:<route>``, or ``anonymous``), ``role``,
``target`` and an optional ``reason``.
"""

from __future__ import annotations

from typing import Any

from portcullis.audit.record import AuditRecord
from portcullis.clock import Clock

__all__ = ["SECURITY", "security_event"]

SECURITY = "security"


def security_event(
    *, clock: Clock, action: str, outcome: str, actor: str, role: str | None, target: str | None,
    client_ip: str, request_id: str, status: int, method: str = "", path: str = "", user_agent: str | None = None,
    reason: str | None = None, details: dict[str, Any] | None = None, trace_id: str | None = None,
) -> AuditRecord:
    """The record of one security event (masked like every record; ``details`` are extra fields)."""
    event: dict[str, Any] = {"action": action, "outcome": outcome, "actor": actor, "role": role, "target": target}
    if reason is not None:
        event["reason"] = reason
    if details:
        event.update(details)
    return AuditRecord.create(
        clock=clock, request_id=request_id, client_ip=client_ip, consumer_id=None, key_id=None, method=method,
        route=None, path=path, query=None, status=status, decision=f"{action}:{outcome}", latency_ms=0.0,
        bytes_in=0, bytes_out=0, upstream_status=None, user_agent=user_agent, record_class=SECURITY, event=event,
        trace_id=trace_id,
    )
