"""Phase 2: an open breaker fails the call fast, before any limit or budget is spent on a call
that cannot be sent. Each attempt asks the breaker again in the send phase (a half-open breaker
admits a few probes only)."""

from __future__ import annotations

from portcullis.egress.breaker import BreakerState
from portcullis.egress.call.route import EgressRoute
from portcullis.errors import CircuitOpen

__all__ = ["check_breaker"]


def check_breaker(route: EgressRoute) -> None:
    breaker = route.breaker
    if breaker.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN):
        raise CircuitOpen(f"circuit_open:{route.name}", retry_after_s=breaker.retry_after_s())
