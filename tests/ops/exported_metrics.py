"""What the ops tests compare deploy/ and docs/runbooks/ against: the metric names a real gateway exports.

Two sources, so the check is neither flaky nor lenient: the text a gateway's admin listener serves
on ``/metrics`` after some traffic (what Prometheus really scrapes), and the families declared in
its registry, which name the series that only appear after an event (a lost audit record, an open
breaker) by the sample names prometheus_client gives each type.
"""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import GatewayFactory, UpstreamServer, gateway_yaml

__all__ = ["METRIC_NAME", "ExportedMetrics", "exported_metrics", "metric_names_in", "selectors_in"]

METRIC_NAME = re.compile(r"\bportcullis_[a-z0-9_]+\b")
_SELECTOR = re.compile(r"\b(portcullis_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "unknown": ("",),
}
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = frozenset({"instance", "job"})


class ExportedMetrics:
    def __init__(self, scraped: dict[str, set[str]], declared: set[str]) -> None:
        self.scraped = scraped  # sample name -> label names seen on /metrics
        self.declared = declared  # every sample name the registry's families can produce
        self.names = declared | set(scraped)


async def exported_metrics(make_gateway: GatewayFactory, upstream: UpstreamServer) -> ExportedMetrics:
    """A gateway with a rate-limited public route and a keyed one, after allowed, refused and failed requests."""
    gw = await make_gateway(gateway_yaml(upstream.url, """
routes:
  - name: public
    path: /public
    upstream: api
    auth: none
    rate_limits:
      - {name: per-ip, key: ip, rates: ["2/minute"]}
  - name: private
    path: /private
    upstream: api
"""))
    for _ in range(3):
        await gw.client.get("/public")
    await gw.client.get("/private", headers={"X-API-Key": "pcl_000000000000_wrong"})
    await gw.client.get("/private", headers={"X-API-Key": await gw.key()})
    async with await gw.admin() as admin:
        answer = await admin.get("/metrics")
    assert answer.status_code == 200, answer.text
    scraped: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            scraped.setdefault(sample.name, set()).update(sample.labels)
    declared = {
        family.name + suffix
        for family in gw.services.metrics.registry.collect()
        for suffix in _SUFFIXES[family.type]
    }
    return ExportedMetrics(scraped, declared)


def metric_names_in(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def selectors_in(text: str) -> list[tuple[str, set[str]]]:
    """Each ``name{matchers}`` in PromQL text, with the label names its matchers use."""
    return [(name, set(_MATCHER.findall(matchers))) for name, matchers in _SELECTOR.findall(text)]
