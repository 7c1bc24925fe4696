"""The answer to a ``validate_only`` call: what the phases would decide, with nothing sent or spent.

Why a report and not a silent 200: a workflow in development wants to know whether its calls would go
(the route, the URL, the limits and budgets they would spend and whether they fit, the run-mode
permission, the breaker) before it spends money or quota. Phase 1's refusals (an unknown route, a
path or method the route does not allow, a destination the guard refuses, a bad run mode) stay
refusals, the same problem documents the real call would get; everything after phase 1 is reported
instead of enforced. Headers and secrets are named, never valued, and the URL loses its query (it
may carry the caller's own tokens).
"""

from __future__ import annotations

from portcullis.egress.breaker import BreakerState
from portcullis.egress.budgets import BudgetDecision
from portcullis.egress.call.phase1_destination import Destination
from portcullis.egress.call.phase3_limits import Preview
from portcullis.egress.call.request import EgressResult
from portcullis.egress.run_mode import DryRunReport, PlannedCheck, RunMode
from portcullis.errors import ErrorCode

__all__ = ["validate_only_result"]

_HEADERS = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]


def validate_only_result(destination: Destination, preview: Preview) -> EgressResult:
    """A 200 JSON report (``egress/run_mode.DryRunReport``) as the call's result."""
    route = destination.route
    open_now = route.breaker.state in (BreakerState.OPEN, BreakerState.FORCED_OPEN)
    permitted = destination.mode.full_run_permitted
    checks = (
        PlannedCheck("destination", True),
        PlannedCheck("full_run", permitted, None if permitted else ErrorCode.EGRESS_RUN_MODE_DENIED),
        PlannedCheck("breaker", not open_now, ErrorCode.CIRCUIT_OPEN if open_now else None),
        *preview.checks,
    )
    injected = tuple(route.config.headers) + (("authorization",) if route.oauth2 is not None else ())
    report = DryRunReport(
        route=route.name, method=destination.method, url=destination.url.split("?", 1)[0],
        run_mode=RunMode.VALIDATE_ONLY, checks=checks, spends=preview.spends, headers_injected=injected,
        secrets=route.secrets, full_run_permitted=permitted,
    )
    return EgressResult(200, list(_HEADERS), report.body(), 0, BudgetDecision(True, None, {}, 0.0),
                        route.breaker.state, host=route.host, run_mode=RunMode.VALIDATE_ONLY)
