"""The overview's numbers: requests, refusals, errors and p95 latency per route, from the metrics.

Why from the Prometheus exposition (``GatewayMetrics.render``) rather than the collectors' own
fields: it is the metrics' public output, the one that already merges every worker's share when
``listen.workers`` > 1, so the console shows what a scrape would. Parsing a few hundred lines
every few seconds costs nothing next to the admin listener's other work.

p95 is estimated from the histogram buckets the way PromQL's ``histogram_quantile`` does (linear
within the bucket the rank falls in); "p95-ish" honestly: it is only as fine as the buckets.
Top consumers come from the most recent request records of the audit trail (the metrics carry no
consumer label, on purpose: labels stay bounded), for operators who may read them.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ConsumerCount", "RouteTraffic", "histogram_quantile", "route_traffic", "top_consumers"]

_REQUESTS = "portcullis_requests"
_DURATION = "portcullis_request_duration_seconds"


@dataclass(slots=True)
class RouteTraffic:
    route: str
    requests: int = 0
    refused: int = 0  # 4xx: the gateway's decisions
    errors: int = 0  # 5xx
    p95_ms: float | None = None
    buckets: list[tuple[float, float]] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def refused_rate(self) -> float:
        return self.refused / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, object]:
        return {"route": self.route, "requests": self.requests, "refused_rate": round(self.refused_rate, 4),
                "error_rate": round(self.error_rate, 4), "p95_ms": self.p95_ms}


@dataclass(frozen=True, slots=True)
class ConsumerCount:
    consumer: str
    requests: int


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile from cumulative ``(upper bound, count)`` buckets ending with +Inf, or None."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower  # above the last finite bucket: its bound is all we know
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None


def route_traffic(exposition: str) -> list[RouteTraffic]:
    """Per-route traffic from the text exposition format, busiest route first."""
    routes: dict[str, RouteTraffic] = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == _REQUESTS:
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                r = routes.setdefault(sample.labels.get("route", ""), RouteTraffic(sample.labels.get("route", "")))
                count = int(sample.value)
                r.requests += count
                status = sample.labels.get("status", "")
                if status.startswith("4"):
                    r.refused += count
                elif status.startswith("5"):
                    r.errors += count
        elif family.name == _DURATION:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    route = sample.labels.get("route", "")
                    r = routes.setdefault(route, RouteTraffic(route))
                    r.buckets.append((float(sample.labels["le"]), sample.value))
    for r in routes.values():
        p95 = histogram_quantile(0.95, r.buckets)
        r.p95_ms = round(p95 * 1000, 1) if p95 is not None else None
    return sorted(routes.values(), key=lambda r: (-r.requests, r.route))


def top_consumers(records: Iterable[dict[str, object]], *, limit: int = 10) -> list[ConsumerCount]:
    """The consumers with the most request records among ``records`` (anonymous requests left out)."""
    counts = Counter(str(r["consumer_id"]) for r in records if r.get("consumer_id"))
    return [ConsumerCount(c, n) for c, n in counts.most_common(limit)]
