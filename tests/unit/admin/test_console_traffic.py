"""The overview's numbers: per-route traffic and p95 from the metrics' text exposition."""

from __future__ import annotations

import pytest

from portcullis.admin.console.traffic import histogram_quantile, route_traffic, top_consumers
from portcullis.observability.metrics import GatewayMetrics


@pytest.mark.parametrize(("buckets", "expected"), [
    pytest.param([(0.1, 0.0), (0.2, 100.0), (float("inf"), 100.0)], 0.195, id="linear-within-the-bucket"),
    pytest.param([(0.1, 100.0), (float("inf"), 100.0)], 0.095, id="first-bucket-from-zero"),
    pytest.param([(0.1, 0.0), (float("inf"), 10.0)], 0.1, id="above-the-last-bound-is-that-bound"),
    pytest.param([(0.1, 0.0), (float("inf"), 0.0)], None, id="no-observations"),
])
def test_histogram_quantile_interpolates_like_promql(buckets: list[tuple[float, float]],
                                                      expected: float | None) -> None:
    found = histogram_quantile(0.95, buckets)
    assert found == pytest.approx(expected) if expected is not None else found is None


def test_route_traffic_counts_requests_refusals_and_errors_per_route() -> None:
    metrics = GatewayMetrics()
    for status, seconds in ((200, 0.004), (200, 0.004), (401, 0.001), (502, 0.2)):
        metrics.request_finished("orders", status, "allowed" if status == 200 else "rejected", seconds)
    metrics.request_finished("health", 200, "allowed", 0.001)
    orders, health = route_traffic(metrics.render().decode())
    assert (orders.route, orders.requests, orders.refused, orders.errors) == ("orders", 4, 1, 1)
    assert (orders.refused_rate, orders.error_rate) == (0.25, 0.25)
    assert orders.p95_ms is not None and orders.p95_ms > 4
    assert (health.route, health.requests) == ("health", 1)


def test_top_consumers_leaves_out_anonymous_requests() -> None:
    records = [{"consumer_id": "acme"}, {"consumer_id": "acme"}, {"consumer_id": None}, {"consumer_id": "beta"}]
    assert [(c.consumer, c.requests) for c in top_consumers(records)] == [("acme", 2), ("beta", 1)]
