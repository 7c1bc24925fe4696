"""Locally counted families scrape exactly as prometheus_client's own Counter and Histogram would.

The gateway counts its per-request series in plain numbers (no locks) and builds the families on
scrape; dashboards and alert rules written against the former collectors must not see a change.
Each test feeds the same values to both and compares the exposition text, ``_created`` aside.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from portcullis.observability.local_metrics import LocalCounter, LocalHistogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_a_local_histogram_scrapes_like_a_prometheus_histogram() -> None:
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LocalHistogram("x_seconds", "Doc.", "route", buckets=BUCKETS, registry=ours_registry)
    theirs = Histogram("x_seconds", "Doc.", ["route"], buckets=BUCKETS, registry=theirs_registry)
    # Values on a bound (a bucket is "less than or equal"), between bounds, above the last, zero.
    values = [0.0, 0.0005, 0.0007, 0.001, 0.3, 1.0, 9.99, 10.0, 11.5, 250.0]
    for i, value in enumerate(values):
        route = "a" if i % 3 else "b"
        ours.observe(route, value)
        theirs.labels(route).observe(value)
    assert _exposition(ours_registry) == _exposition(theirs_registry)


def test_a_local_counter_scrapes_like_a_prometheus_counter() -> None:
    ours_registry, theirs_registry = CollectorRegistry(), CollectorRegistry()
    ours = LocalCounter("req_total", "Doc.", ["route", "status"], registry=ours_registry)
    theirs = Counter("req_total", "Doc.", ["route", "status"], registry=theirs_registry)
    for labels in [("a", "200"), ("a", "200"), ("b", "429"), ("a", "503")]:
        ours.inc(labels)
        theirs.labels(*labels).inc()
    assert _exposition(ours_registry) == _exposition(theirs_registry)
    assert ours.value(("a", "200")) == 2
    assert ours.value(("c", "200")) == 0
