"""Per-request metrics counted in plain Python numbers and turned into Prometheus samples on scrape.

Why not ``prometheus_client.Counter`` and ``Histogram`` for these: every ``inc`` and ``observe``
takes a lock (a histogram takes two, and walks its buckets in Python), because those collectors
may be updated from any thread. The per-request families here are updated only on the event
loop's thread, once or twice per request, and read a few times a minute: counting in a dict of
ints and lists and building the families at scrape time moves the cost from the request to the
scrape. It is "count locally, export on scrape", which is what client
libraries of other languages do with per-thread cells.

Consistency: a scrape runs on the same event loop (the admin app), so it never sees a half-done
update. Were it to run on another thread, the worst it could see is a sum one observation ahead of
its count, which the next scrape corrects; no update is ever lost, since only one thread writes.

What it refuses to do: accept a label value it would have to invent. Label sets are what the
caller passes, which for these families are route names, status codes and decision kinds (fixed,
small sets; see ``metrics.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LocalCounter", "LocalHistogram"]


class LocalCounter(Collector):
    """A counter family: ``inc(labels)`` adds one (or ``amount``) to the series of that label tuple."""

    def __init__(
        self, name: str, documentation: str, label_names: Sequence[str], *, registry: CollectorRegistry,
    ) -> None:
        self._name = name.removesuffix("_total")
        self._doc = documentation
        self._label_names = tuple(label_names)
        self._values: dict[tuple[str, ...], float] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        values = self._values
        values[labels] = values.get(labels, 0) + amount

    def value(self, labels: tuple[str, ...]) -> float:
        return self._values.get(labels, 0)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self._name, self._doc, labels=self._label_names)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._label_names)
        for labels, value in list(self._values.items()):
            family.add_metric(labels, value)
        yield family


class LocalHistogram(Collector):
    """A histogram family with one label: ``observe(label, seconds)``.

    Each series is ``[count per bucket..., count above the last bound, sum]``; buckets are
    cumulated at scrape time, so an observation is one ``bisect`` and two additions.
    """

    def __init__(
        self, name: str, documentation: str, label_name: str, *, buckets: Sequence[float], registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._doc = documentation
        self._label_name = label_name
        self._bounds = tuple(sorted(buckets))
        self._series: dict[str, list[float]] = {}
        registry.register(self)

    def observe(self, label: str, seconds: float) -> None:
        series = self._series.get(label)
        if series is None:
            series = self._series[label] = [0.0] * (len(self._bounds) + 2)
        # Prometheus buckets are "less than or equal": bisect_left puts a value equal to a bound in it.
        series[bisect.bisect_left(self._bounds, seconds)] += 1
        series[-1] += seconds

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self._name, self._doc, labels=[self._label_name])

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=[self._label_name])
        for label, series in list(self._series.items()):
            running = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(self._bounds, series, strict=False):
                running += count
                buckets.append((repr(bound), running))  # as prometheus_client writes a bound of 10 or less
            running += series[len(self._bounds)]
            buckets.append(("+Inf", running))
            family.add_metric([label], buckets, series[-1])
        yield family

