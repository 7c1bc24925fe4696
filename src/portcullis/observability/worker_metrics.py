"""One scrape for every worker: with ``listen.workers`` > 1, worker 0's ``/metrics`` shows them all.

Why not prometheus-client's multiprocess mode: it works only with its own ``Counter``/``Histogram``
classes backed by mmapped files, and the per-request families here are counted in plain numbers
and exported on scrape (``local_metrics.py``) because the library's per-update locks showed in
profiles. So each worker other than 0 writes a snapshot of its samples, every
``SNAPSHOT_INTERVAL_S`` and at shutdown, to its own file in a directory private to this gateway
(made by the parent process, mode 0700); worker 0, which serves the admin listener, adds those
snapshots to its own samples when scraped. A snapshot is written to a temporary file and renamed,
so a scrape never reads half of one.

How samples combine: counters and histograms (buckets, sums, counts) are summed over the workers,
so ``rate()`` and ``histogram_quantile`` see the whole gateway; gauges are kept per worker with a
``worker`` label (in-flight requests, queue depths and health flags of different processes are not
meant to be added by the gateway; an alert says ``max`` or ``sum`` itself). A worker's figures
reach the scrape at most one interval late; the file of a worker that died stays, so totals never
go backwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

__all__ = ["SNAPSHOT_INTERVAL_S", "WORKER_LABEL", "MergedWorkers", "WorkerShare", "keep_sharing", "write_snapshot"]

log = logging.getLogger("portcullis.metrics")

SNAPSHOT_INTERVAL_S = 1.0
WORKER_LABEL = "worker"
_SUMMED = frozenset({"counter", "histogram"})


@dataclass(frozen=True, slots=True)
class WorkerShare:
    """Where a worker's snapshots go: the gateway's private directory and this worker's index."""

    directory: Path
    index: int

    @property
    def file(self) -> Path:
        return self.directory / f"worker-{self.index}.json"


def _families(registry: CollectorRegistry) -> list[dict[str, Any]]:
    return [
        {"name": m.name, "type": m.type, "documentation": m.documentation,
         "samples": [[s.name, s.labels, s.value] for s in m.samples]}
        for m in registry.collect()
    ]


def write_snapshot(registry: CollectorRegistry, share: WorkerShare) -> None:
    """Write this worker's samples (blocking: call it in a thread)."""
    temporary = share.file.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_bytes(orjson.dumps(_families(registry)))
    temporary.replace(share.file)


async def keep_sharing(registry: CollectorRegistry, share: WorkerShare) -> None:
    """Write a snapshot every ``SNAPSHOT_INTERVAL_S`` until cancelled, then a last one."""
    try:
        while True:
            await _write(registry, share)
            await asyncio.sleep(SNAPSHOT_INTERVAL_S)
    finally:
        await asyncio.shield(_write(registry, share))


async def _write(registry: CollectorRegistry, share: WorkerShare) -> None:
    try:
        await asyncio.to_thread(write_snapshot, registry, share)
    except OSError as exc:  # a full or vanished directory costs this scrape's figures, never the worker
        log.warning("metrics: could not write this worker's snapshot (%s)", exc)


class MergedWorkers(Collector):
    """Worker 0's own registry plus the other workers' latest snapshots, as one set of families."""

    def __init__(self, own: CollectorRegistry, share: WorkerShare) -> None:
        self._own = own
        self._share = share

    def _snapshots(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        for path in sorted(self._share.directory.glob("worker-*.json")):
            index = path.stem.removeprefix("worker-")
            if index == str(self._share.index):
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):  # not written yet, or gone
                yield index, orjson.loads(path.read_bytes())

    def collect(self) -> Iterable[Metric]:
        merged: dict[str, Metric] = {}
        summed: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}

        def add(index: str, name: str, kind: str, doc: str, samples: Iterable[Any]) -> None:
            family = merged.get(name)
            if family is None:
                family = merged[name] = Metric(name, doc, kind)
                summed[name] = {}
            for sample_name, labels, value in samples:
                if kind in _SUMMED:
                    key = (sample_name, tuple(sorted(labels.items())))
                    seen = summed[name].get(key)
                    if seen is None:
                        summed[name][key] = value
                    elif sample_name.endswith("_created"):  # a start time: the earliest worker's
                        summed[name][key] = min(seen, value)
                    else:
                        summed[name][key] = seen + value
                else:
                    family.samples.append(Sample(sample_name, {**labels, WORKER_LABEL: index}, value))

        for own in self._own.collect():
            add(str(self._share.index), own.name, own.type, own.documentation,
                ((s.name, s.labels, s.value) for s in own.samples))
        for index, families in self._snapshots():
            for f in families:
                add(index, f["name"], f["type"], f["documentation"], f["samples"])
        for name, family in merged.items():
            for (sample_name, labels), value in summed[name].items():
                family.samples.append(Sample(sample_name, dict(labels), value))
            yield family

    def render(self) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)
        return generate_latest(registry)
