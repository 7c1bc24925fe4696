"""Several workers, one scrape: counters and histograms summed, gauges kept per worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from portcullis.observability.local_metrics import LocalCounter
from portcullis.observability.worker_metrics import MergedWorkers, WorkerShare, write_snapshot


def worker_registry(requests: int, latencies: list[float], in_flight: int) -> CollectorRegistry:
    registry = CollectorRegistry()
    local = LocalCounter("portcullis_requests_total", "Requests.", ["route"], registry=registry)
    for _ in range(requests):
        local.inc(("orders",))
    hits = Counter("portcullis_rate_limit_hits_total", "Hits.", ["limit"], registry=registry)
    hits.labels("per-ip").inc(requests)
    latency = Histogram("portcullis_request_duration_seconds", "Latency.", buckets=(0.1, 1.0), registry=registry)
    for seconds in latencies:
        latency.observe(seconds)
    Gauge("portcullis_requests_in_flight", "In flight.", registry=registry).set(in_flight)
    return registry


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode()) for s in f.samples}


def test_counters_and_histograms_add_up_and_gauges_stay_per_worker(tmp_path: Path) -> None:
    zero = worker_registry(3, [0.05, 2.0], in_flight=2)
    write_snapshot(worker_registry(5, [0.5], in_flight=7), WorkerShare(tmp_path, 1))
    write_snapshot(worker_registry(1, [0.05], in_flight=0), WorkerShare(tmp_path, 2))
    got = samples(MergedWorkers(zero, WorkerShare(tmp_path, 0)).render())
    assert got[("portcullis_requests_total", (("route", "orders"),))] == 9
    assert got[("portcullis_rate_limit_hits_total", (("limit", "per-ip"),))] == 9
    assert got[("portcullis_request_duration_seconds_bucket", (("le", "0.1"),))] == 2
    assert got[("portcullis_request_duration_seconds_bucket", (("le", "1.0"),))] == 3
    assert got[("portcullis_request_duration_seconds_count", ())] == 4
    assert got[("portcullis_request_duration_seconds_sum", ())] == pytest.approx(2.6)
    assert {k[1]: v for k, v in got.items() if k[0] == "portcullis_requests_in_flight"} == {
        (("worker", "0"),): 2, (("worker", "1"),): 7, (("worker", "2"),): 0}


def test_a_start_time_is_the_earliest_not_a_sum(tmp_path: Path) -> None:
    zero, one = worker_registry(1, [], 0), worker_registry(1, [], 0)
    write_snapshot(one, WorkerShare(tmp_path, 1))
    own = samples(MergedWorkers(zero, WorkerShare(tmp_path, 9)).render())  # only the file counts as another worker
    merged = samples(MergedWorkers(zero, WorkerShare(tmp_path, 0)).render())
    created = ("portcullis_rate_limit_hits_created", (("limit", "per-ip"),))
    assert merged[created] <= own[created] * 1.0001  # about the same instant, never twice it


def test_a_missing_or_torn_snapshot_costs_only_that_worker(tmp_path: Path) -> None:
    zero = worker_registry(3, [], in_flight=1)
    (tmp_path / "worker-1.json").write_bytes(b'[{"name": "portcullis_reque')  # a crash mid-write, say
    got = samples(MergedWorkers(zero, WorkerShare(tmp_path, 0)).render())
    assert got[("portcullis_requests_total", (("route", "orders"),))] == 3


def test_a_snapshot_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    share = WorkerShare(tmp_path, 1)
    write_snapshot(worker_registry(1, [], 0), share)
    write_snapshot(worker_registry(4, [], 0), share)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-1.json"]  # no temporary left behind
    got = samples(MergedWorkers(worker_registry(0, [], 0), WorkerShare(tmp_path, 0)).render())
    assert got[("portcullis_requests_total", (("route", "orders"),))] == 4
