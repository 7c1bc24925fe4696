"""Rate limits: every limit that applies to a request is consumed all-or-nothing, in one call.

Why one call for all: a request refused by the hourly window must not spend from the per-second
window, and (with a shared store) one decision must be one round trip. The keys are built here from
the request (consumer, client IP, route, global); the arithmetic lives in ``limiting``.

A refusal is 429 with ``Retry-After``; every response carries ``RateLimit-Policy`` and
``RateLimit`` (draft-ietf-httpapi-ratelimit-headers) for the rules that apply.

Emergency limits (incident controls): the factor in force for this route and consumer, read from the
in-memory snapshot, scales every limit of the decision (``limiting/scaling.py``); the headers then
show the scaled quota, which is the truth the client must pace itself by.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.clock import Clock
from portcullis.config.model import RateLimitConfig
from portcullis.controls.service import IncidentControls
from portcullis.errors import ErrorCode
from portcullis.http.context import RequestContext
from portcullis.limiting.headers import ratelimit_headers, retry_after_value
from portcullis.limiting.limiter import LimitRule, MultiLimiter
from portcullis.observability.metrics import GatewayMetrics
from portcullis.pipeline.base import Decision, PolicyBase, Reject, Stage

__all__ = ["RateLimitPolicy"]


class RateLimitPolicy(PolicyBase):
    name = "limit.rate"
    stage = Stage.LIMIT

    def __init__(
        self, configs: Sequence[RateLimitConfig], *, route: str, limiter: MultiLimiter, metrics: GatewayMetrics,
        controls: IncidentControls | None = None, clock: Clock | None = None,
    ) -> None:
        self._rules = tuple(
            (c.key, LimitRule(name=c.name, windows=tuple(c.rates), burst=c.burst,
                                 on_store_failure=c.on_store_failure)) for c in configs
        )
        self._route_key = route
        self._limiter = limiter
        self._metrics = metrics
        self._controls = controls if clock is not None else None
        self._clock = clock

    async def on_request(self, ctx: RequestContext) -> Decision | None:
        hits = []
        for key, rule in self._rules:
            if key == "consumer":
                if ctx.principal is None:
                    continue
                subject = ctx.principal.consumer_id
            elif key == "ip":
                subject = ctx.client_ip
            elif key == "route":
                subject = self._route_key
            else:
                subject = "*"
            hits.append((rule, subject))
        if not hits:
            return None
        factor = 1.0
        if self._controls is not None and self._clock is not None and self._controls.snapshot.has_emergencies:
            principal = ctx.principal
            factor = self._controls.snapshot.factor(
                self._route_key, principal.consumer_id if principal else None, self._clock.wall())
        decision = await self._limiter.consume(hits, factor=factor)
        headers = ratelimit_headers(decision)
        if not decision.allowed:
            limit = decision.violated or "unknown"
            self._metrics.rate_limited.labels(limit).inc()
            return Reject(
                ErrorCode.LIMIT_EXCEEDED, f"rate_limited:{limit}",
                ((b"retry-after", retry_after_value(decision.retry_after_s)), *headers),
            )
        ctx.response_headers.extend(headers)
        return None
