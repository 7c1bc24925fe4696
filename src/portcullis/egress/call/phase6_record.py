"""Phase 6: the call's ``EgressOutcome``, and the metrics and baselines it counts.

Why here and not in the doors: a refusal at the transport counted nothing while the same refusal at
the HTTP door counted a metric; the record phase runs for every door, so a dashboard sees calls
whichever way they came. The audit record itself is the door's (it knows the caller's address,
path and bytes), written from the outcome's ``decision`` and ``audit`` fields.
"""

from __future__ import annotations

from portcullis.anomaly.service import AnomalyService
from portcullis.egress.call.outcome import EgressOutcome, answered, is_refusal, refused
from portcullis.egress.call.request import EgressRequest, EgressResult
from portcullis.egress.run_mode import RunMode
from portcullis.errors import ClientError, UpstreamError
from portcullis.observability.metrics import GatewayMetrics

__all__ = ["Recorder"]


class Recorder:
    def __init__(self, *, metrics: GatewayMetrics | None, anomaly: AnomalyService | None) -> None:
        self._metrics = metrics
        self._anomaly = anomaly

    def answered(self, request: EgressRequest, result: EgressResult, took_s: float) -> EgressOutcome:
        if result.run_mode is RunMode.VALIDATE_ONLY:  # nothing was sent: no call to count or learn from
            return answered(request, result)
        if self._metrics is not None:
            self._metrics.egress_call(request.route, result.status, result.attempts, took_s, result.cost)
        if self._anomaly is not None:
            self._anomaly.detector.observe_egress(request.route, result.status, took_s,
                                                  burned=result.budget.burned, consumer=request.context.user)
        return answered(request, result)

    def refused(self, request: EgressRequest, exc: ClientError | UpstreamError, *, known_route: bool,
                took_s: float, run_mode: RunMode | None = None) -> EgressOutcome:
        """``run_mode``: the call's, once phase 1 decided it (a test run's refusals are on record as such)."""
        outcome = refused(request, exc, run_mode)
        if self._metrics is not None:
            # An unknown route name is the caller's text: never a label value (cardinality).
            label = request.route if known_route else ""
            if is_refusal(exc):
                self._metrics.egress_refusals.labels(label, exc.reason.split(":", 1)[0]).inc()
            else:  # sent, and failed: a call the provider (or the way to it) did not answer
                self._metrics.egress_call(label, outcome.status, 1, took_s)
        if self._anomaly is not None and not is_refusal(exc):
            self._anomaly.detector.observe_egress(request.route, outcome.status, took_s,
                                                  consumer=request.context.user)
        return outcome
