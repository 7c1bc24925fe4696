"""Prometheus collectors for the gateway, with fixed, small label sets.

Why a registry per gateway (not the global default): tests and reloads can build several gateways
in one process without duplicate-metric errors, and nothing leaks between them. Labels are route
names, status classes, decision kinds and limit names — never raw paths, IPs or key ids, which
would explode cardinality and leak identities.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from portcullis.observability.budget_usage import BudgetUsage
from portcullis.observability.local_metrics import LocalCounter, LocalHistogram
from portcullis.observability.worker_metrics import MergedWorkers

__all__ = ["BudgetUsageCollector", "GatewayMetrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


_STATUS_CLASS = {n: f"{n}xx" for n in range(1, 6)}


class GatewayMetrics:
    """Every collector the ingress path feeds."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # Updated on every request: counted locally, exported on scrape (see local_metrics.py).
        self.requests = LocalCounter(
            "portcullis_requests_total", "Requests by route, status and decision kind.",
            ["route", "status", "decision"], registry=r,
        )
        self.request_duration = LocalHistogram(
            "portcullis_request_duration_seconds", "Time from request to response end, by route.",
            "route", buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.upstream_duration = LocalHistogram(
            "portcullis_upstream_duration_seconds", "Time to the upstream's response head, by route.",
            "route", buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.rate_limited = Counter(
            "portcullis_rate_limit_hits_total", "Requests refused by a rate limit, by limit name.",
            ["limit"], registry=r,
        )
        self.auth_failures = Counter(
            "portcullis_auth_failures_total", "Failed authentications by reason.", ["reason"], registry=r,
        )
        self.upstream_errors = Counter(
            "portcullis_upstream_errors_total", "Upstream failures by route and kind.",
            ["route", "kind"], registry=r,
        )
        self.secrets_served_stale = Counter(
            "portcullis_secrets_served_stale_total", "Vault secrets revealed from this instance's last read "
            "because the store was unreachable (stale-if-error, within keys.stale_if_error).", registry=r,
        )
        self.keys_served_stale = Counter(
            "portcullis_keys_served_stale_total",
            "Requests allowed on an API key record kept past its cache TTL because the key store was unreachable.",
            registry=r,
        )
        self.internal_errors = Counter(
            "portcullis_internal_errors_total", "Unexpected errors caught by the outermost guard.", registry=r,
        )
        self.audit_spilled = Gauge(
            "portcullis_audit_spilled_records", "Audit records waiting in spill files.", registry=r,
        )
        self.audit_queued = Gauge(
            "portcullis_audit_queued_records", "Audit records queued in memory for the writer.", registry=r,
        )
        self.audit_lost = Counter(
            "portcullis_audit_lost_records", "Audit records a sink will never get, by sink and reason"
            " (queue_full, spill_failed, spill_torn).", ["sink", "reason"], registry=r,
        )
        self.config_reloads = Counter(
            "portcullis_config_reloads_total", "Config reloads by result.", ["result"], registry=r,
        )
        # Updated on every egress call: counted locally too.
        self.egress_calls = LocalCounter(
            "portcullis_egress_calls_total", "Egress calls by route and status class.", ["route", "status"], registry=r,
        )
        self.egress_retries = LocalCounter(
            "portcullis_egress_retries_total", "Retries spent on egress calls, by route.", ["route"], registry=r,
        )
        self.egress_breaker_transitions = Counter(
            "portcullis_egress_breaker_transitions_total", "Circuit breaker state changes, by route and new state.",
            ["route", "state"], registry=r,
        )
        self.egress_duration = LocalHistogram(
            "portcullis_egress_duration_seconds", "Egress call duration (retries included), by route.",
            "route", buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.egress_refusals = Counter(
            "portcullis_egress_refusals_total", "Egress calls refused before sending, by route and reason kind.",
            ["route", "kind"], registry=r,
        )
        self.egress_cost = LocalCounter(
            "portcullis_egress_cost_total", "Cost spent against egress budgets (route costs), by route.",
            ["route"], registry=r,
        )
        self.egress_proxy_tunnels = Counter(
            "portcullis_egress_proxy_tunnels_total", "Proxy door CONNECT tunnels, by route and decision kind "
            "(allowed, auth, egress_refused, upstream_error, invalid_request, ...).", ["route", "decision"], registry=r,
        )
        self.egress_proxy_tunnel_bytes = Counter(
            "portcullis_egress_proxy_tunnel_bytes_total", "Bytes through proxy door tunnels, by route and direction "
            "(up: client to upstream).", ["route", "direction"], registry=r,
        )
        self.egress_proxy_refusals = Counter(
            "portcullis_egress_proxy_refusals_total", "Requests the proxy door's listener refused itself (framing, "
            "size, time, connection caps), by kind.", ["kind"], registry=r,
        )
        self.egress_llm_tokens = Counter(
            "portcullis_egress_llm_tokens_total", "Tokens charged on LLM routes, by route and kind (input, output; "
            "unknown: a whole reservation charged because the answer reported no usage).", ["route", "kind"],
            registry=r,
        )
        self.egress_llm_charges_lost = Counter(
            "portcullis_egress_llm_charges_lost_total", "LLM calls whose charge never reached the shared store "
            "(Redis was down when the call was settled): their tokens and cost count in no budget.", ["route"],
            registry=r,
        )
        self.egress_llm_refused = Counter(
            "portcullis_egress_llm_reservations_refused_total", "LLM calls refused before sending because their "
            "reservation did not fit, by route and budget.", ["route", "budget"], registry=r,
        )
        self.egress_breaker_open = Gauge(
            "portcullis_egress_breaker_open", "1 while a route's breaker refuses calls (open or forced open).",
            ["route"], registry=r,
        )
        # The egress bulkheads (egress/bulkhead.py): labels are route names and the configured classes.
        self.egress_queue_depth = Gauge(
            "portcullis_egress_queue_depth", "Egress calls waiting for a place in their endpoint's bulkhead, by route "
            "and priority class.", ["route", "priority"], registry=r,
        )
        self.egress_shed = Counter(
            "portcullis_egress_shed_total", "Egress calls refused by their endpoint's bulkhead, by route, priority "
            "class and reason (queue_full, evicted, queue_timeout).", ["route", "priority", "reason"], registry=r,
        )
        self.egress_queue_wait = Histogram(
            "portcullis_egress_queue_wait_seconds", "Time an egress call that queued waited for its place, by route "
            "and priority class.", ["route", "priority"], buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.shared_state_degraded = Gauge(
            "portcullis_shared_state_degraded",
            "1 while Redis is unreachable and limits and budgets follow their on_failure rule.", registry=r,
        )
        self.admin_auth_failures = Counter(
            "portcullis_admin_auth_failures_total", "Admin API requests refused before any act, by reason (missing,"
            " bad_secret, expired, host, origin, throttled, ...).", ["reason"], registry=r,
        )
        self.store_up = Gauge(
            "portcullis_store_up", "1 while the durable store (keys, secrets, audit table) answers its probe, else 0.",
            registry=r,
        )
        self.anomalies = Counter(
            "portcullis_anomalies_total", "Departures from a route's or consumer's baseline, by kind (volume_spike,"
            " error_rate_spike, latency_spike, auth_failure_spike, budget_burn_spike).", ["kind"],
            registry=r,
        )
        # A plain int read at scrape time: a Gauge inc/dec pair took two locks per request.
        self.requests_in_flight = 0
        self.in_flight = Gauge("portcullis_requests_in_flight", "Requests being served.", registry=r)
        self.in_flight.set_function(lambda: self.requests_in_flight)
        self._status_text: dict[int, str] = {}
        self.workers: MergedWorkers | None = None  # set on worker 0 when listen.workers > 1

    def request_finished(self, route: str, status: int, decision_kind: str, seconds: float) -> None:
        text = self._status_text.get(status)
        if text is None:
            text = self._status_text[status] = str(status)
        self.requests.inc((route, text, decision_kind))
        self.request_duration.observe(route, seconds)

    def audit_records_lost(self, sink: str, reason: str, records: int) -> None:
        """The audit writer's ``on_lost`` hook."""
        self.audit_lost.labels(sink, reason).inc(records)

    def egress_call(self, route: str, status: int, attempts: int, seconds: float, cost: float = 0.0) -> None:
        self.egress_calls.inc((route, _STATUS_CLASS.get(status // 100) or f"{status // 100}xx"))
        self.egress_duration.observe(route, seconds)
        if cost:
            self.egress_cost.inc((route,), cost)
        if attempts > 1:
            self.egress_retries.inc((route,), attempts - 1)

    def bulkhead_depth(self, route: str, priority: str, depth: int) -> None:
        self.egress_queue_depth.labels(route, priority).set(depth)

    def bulkhead_shed(self, route: str, priority: str, reason: str) -> None:
        self.egress_shed.labels(route, priority, reason).inc()

    def bulkhead_waited(self, route: str, priority: str, seconds: float) -> None:
        self.egress_queue_wait.labels(route, priority).observe(seconds)

    def upstream_answered(self, route: str, seconds: float) -> None:
        self.upstream_duration.observe(route, seconds)

    def watch_budgets(self, usage: BudgetUsage) -> None:
        """Export the egress budget gauges from ``usage`` (once per gateway: it survives reloads)."""
        self.registry.register(BudgetUsageCollector(usage))

    def render(self) -> bytes:
        """The text exposition format; with several workers, every worker's (see ``worker_metrics``)."""
        if self.workers is not None:
            return self.workers.render()
        return generate_latest(self.registry)


class BudgetUsageCollector(Collector):
    """The egress budget gauges, read from the tracker at scrape time (see ``egress.budget_usage``).

    The top-burner family is the one metric labelled by a workflow or user name: it holds the
    ``top_n`` fullest per budget at each scrape and nothing else, so its series stay bounded.
    """

    def __init__(self, usage: BudgetUsage) -> None:
        self._usage = usage

    def collect(self) -> Iterator[GaugeMetricFamily]:
        limit = GaugeMetricFamily(
            "portcullis_egress_budget_limit", "Each budget a call to the route spends from: its limit (calls, "
            "tokens for llm_ token budgets, or currency units for cost budgets).", labels=["route", "budget"])
        used = GaugeMetricFamily(
            "portcullis_egress_budget_used_ratio", "The fullest open counter of the budget among those the route's "
            "calls spent from (0 to 1; llm_ budgets count what calls in flight hold too).", labels=["route", "budget"])
        for row in self._usage.routes():
            limit.add_metric([row.route, row.budget], row.limit)
            used.add_metric([row.route, row.budget], row.used_ratio)
        top = GaugeMetricFamily(
            "portcullis_egress_budget_top_used_ratio", "The fullest workflows and users of each budget (at most "
            "egress.budgets.top_burners per budget), by share used.", labels=["budget", "subject_kind", "subject"])
        for burner in self._usage.top():
            top.add_metric([burner.budget, burner.subject_kind, burner.subject], burner.used_ratio)
        yield limit
        yield used
        yield top

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())
