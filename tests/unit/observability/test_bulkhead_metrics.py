"""The bulkhead's metrics, as ``/metrics`` shows them: queue depth, sheds and wait time by route and class."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from portcullis.egress.bulkhead import Bulkhead, BulkheadConfig
from portcullis.errors import Shed
from portcullis.observability.metrics import GatewayMetrics
from portcullis.testing import ManualClock


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def test_queue_depth_sheds_and_wait_time_are_exported_by_route_and_class() -> None:
    metrics = GatewayMetrics()
    clock = ManualClock()
    bulkhead = Bulkhead("llm", BulkheadConfig(max_concurrent=1, max_queue=1), clock=clock, observer=metrics)
    holder = await bulkhead.acquire("normal")
    waiter = asyncio.create_task(bulkhead.acquire("bulk"))
    await asyncio.sleep(0)
    seen = samples(metrics)
    assert seen[("portcullis_egress_queue_depth", (("priority", "bulk"), ("route", "llm")))] == 1
    high = asyncio.create_task(bulkhead.acquire("high"))  # evicts the bulk waiter
    await asyncio.sleep(0)
    with pytest.raises(Shed):
        await waiter
    with pytest.raises(Shed):
        await bulkhead.acquire("low")  # nothing lower than low waits: refused itself
    clock.advance(0.25)
    holder.release()
    (await high).release()
    seen = samples(metrics)
    assert seen[("portcullis_egress_queue_depth", (("priority", "bulk"), ("route", "llm")))] == 0
    assert seen[("portcullis_egress_queue_depth", (("priority", "high"), ("route", "llm")))] == 0
    assert seen[("portcullis_egress_shed_total", (("priority", "bulk"), ("reason", "evicted"), ("route", "llm")))] == 1
    assert seen[("portcullis_egress_shed_total", (("priority", "low"), ("reason", "queue_full"), ("route", "llm")))] == 1
    assert seen[("portcullis_egress_queue_wait_seconds_count", (("priority", "high"), ("route", "llm")))] == 1
    assert seen[("portcullis_egress_queue_wait_seconds_sum", (("priority", "high"), ("route", "llm")))] == 0.25
