"""Anomaly detection: per-subject baselines of volume, error rate, latency and failed authentication,
and a detection when a window departs from them (seed 000 GAP-7 and section 4.3, seed 004 section 8).

Why our own (a few dozen lines of arithmetic) rather than a library: what is needed is an online
baseline per route and per consumer, updated once a minute from counters the request path keeps
in a dict, in bounded memory and with an injected clock; forecasting libraries (statsmodels,
prophet) fit models over stored series and would cost more than the gateway.

How it works:

- **Request path** (``observe``): one call per request adds to this window's counters of its
  subjects (``route:<name>`` and, when authenticated, ``consumer:<id>``; ``observe_egress`` for
  an egress endpoint, ``egress:<route>``): requests, 5xx answers,
  failed authentications, the latency in a fixed log-scale histogram (for the p95), and for egress
  calls the budget burn (below), on the endpoint and on the consumer who called. No I/O,
  no allocation beyond the first request of a subject in a window. At most ``max_subjects``
  subjects are tracked; a new subject beyond that is not (it is counted in
  ``subjects_dropped``), so made-up consumers cannot grow memory.
- **Each window** (``close_window``, called by a timer on the injected clock): every subject's
  figures are compared with its baseline, then folded into it. A baseline is an exponentially
  weighted mean and variance (EWMA, ``alpha`` = 2 / (``baseline_windows`` + 1)), robust to
  ordinary noise; no detection before ``warmup_windows`` windows of history (a new route or
  consumer first learns what normal is). A window in which a subject saw no traffic still counts
  as a zero for its volume baseline.
- **Rules**, with the seed's factors as defaults: volume above ``volume_factor`` times the baseline mean
  and above mean + ``sigmas`` standard deviations (so a noisy subject needs a real departure),
  error rate above ``error_rate_factor`` times baseline, p95 latency above ``latency_factor`` times
  baseline, failed authentications above ``auth_failure_factor`` times baseline, budget burn above
  ``budget_burn_factor`` times baseline; each needs a minimum (``min_requests``, ``min_events``,
  ``min_burn``) so a quiet subject's 1 → 4 is not a spike.
- **Budget burn**: each egress call adds the share of its tightest budget it spent (a call against
  100 calls a day adds 0.01; one costing 0.50 against 5.00 a day adds 0.1), so a window's burn is
  the budget spent in it, in budgets. It measures calls and cost on one scale, and flags an agent
  that starts spending ten times as fast even when its call volume looks ordinary (expensive calls).
- **Not modelled:** seasonality (a daily rhythm looks like a slow drift, which the EWMA follows; a
  sharp morning ramp can be flagged).

The detector only says what it sees; ``anomaly.service`` turns a detection into an audit event, a
metric and an entry operators review.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Anomaly", "AnomalyDetector", "DetectorSettings"]

_Subject = tuple[str, str]  # ("route" | "consumer" | "egress", name)

# Latency buckets (seconds) for the per-window p95: log-scale from 1 ms to 60 s.
_LATENCY_BOUNDS = tuple(0.001 * (1.5 ** i) for i in range(28))


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    window_s: float = 60.0
    baseline_windows: int = 60
    warmup_windows: int = 30
    volume_factor: float = 3.0
    error_rate_factor: float = 2.0
    latency_factor: float = 2.0
    auth_failure_factor: float = 3.0
    budget_burn_factor: float = 3.0
    min_burn: float = 0.05  # budgets' worth per window before burn can be flagged
    sigmas: float = 4.0
    min_requests: int = 20
    min_events: int = 10
    max_subjects: int = 10_000


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One departure: what, for whom, seen against expected, in the window ending at ``window_end``."""

    kind: str  # volume_spike, error_rate_spike, latency_spike, auth_failure_spike, budget_burn_spike
    subject: str  # route:<name>, consumer:<id> or egress:<route>
    observed: float
    expected: float
    window_end: float


@dataclass(slots=True)
class _Window:
    requests: int = 0
    errors: int = 0
    auth_failures: int = 0
    burn: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * (len(_LATENCY_BOUNDS) + 1))

    def p95(self) -> float:
        target = math.ceil(self.requests * 0.95)
        seen = 0
        for index, count in enumerate(self.latency):
            seen += count
            if seen >= target:
                return _LATENCY_BOUNDS[min(index, len(_LATENCY_BOUNDS) - 1)]
        return _LATENCY_BOUNDS[-1]


@dataclass(slots=True)
class _Ewma:
    mean: float = 0.0
    variance: float = 0.0
    folds: int = 0

    def fold(self, value: float, alpha: float) -> None:
        if not self.folds:  # the first value is the first estimate, not a pull from zero
            self.mean, self.folds = value, 1
            return
        delta = value - self.mean
        self.mean += alpha * delta
        self.variance = (1 - alpha) * (self.variance + alpha * delta * delta)
        self.folds += 1


@dataclass(slots=True)
class _Baseline:
    windows: int = 0
    volume: _Ewma = field(default_factory=_Ewma)
    error_rate: _Ewma = field(default_factory=_Ewma)
    p95: _Ewma = field(default_factory=_Ewma)
    auth_failures: _Ewma = field(default_factory=_Ewma)
    burn: _Ewma = field(default_factory=_Ewma)


class AnomalyDetector:
    """See the module docstring. Not thread-safe: the event loop's thread calls every method."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self._alpha = 2.0 / (self.settings.baseline_windows + 1)
        # Subjects as (kind, name) tuples on the request path: no string is formatted per request.
        self._current: dict[_Subject, _Window] = {}
        self._baselines: dict[_Subject, _Baseline] = {}
        self.subjects_dropped = 0

    def observe(self, route: str | None, consumer: str | None, status: int, latency_s: float,
                auth_failed: bool = False) -> None:
        """Count one finished request for its route and consumer."""
        if route:
            self._count(("route", route), status, latency_s, auth_failed)
        if consumer:
            self._count(("consumer", consumer), status, latency_s, auth_failed)

    def observe_egress(self, endpoint: str, status: int, latency_s: float, *, burned: float = 0.0,
                       consumer: str | None = None) -> None:
        """Count one egress call for its endpoint (an egress route), and the budget it ``burned``
        for the endpoint and for the ``consumer`` who made it."""
        window = self._count(("egress", endpoint), status, latency_s, False)
        if burned:
            if window is not None:
                window.burn += burned
            if consumer and (spender := self._window(("consumer", consumer))) is not None:
                spender.burn += burned

    def _window(self, subject: _Subject) -> _Window | None:
        window = self._current.get(subject)
        if window is None:
            if subject not in self._baselines and len(self._baselines) >= self.settings.max_subjects:
                self.subjects_dropped += 1
                return None
            window = self._current[subject] = _Window()
        return window

    def _count(self, subject: _Subject, status: int, latency_s: float, auth_failed: bool) -> _Window | None:
        window = self._window(subject)
        if window is None:
            return None
        window.requests += 1
        if status >= 500:
            window.errors += 1
        if auth_failed:
            window.auth_failures += 1
        window.latency[bisect.bisect_left(_LATENCY_BOUNDS, latency_s)] += 1
        return window

    def close_window(self, window_end: float) -> list[Anomaly]:
        """Compare the window that just ended with each subject's baseline, then learn from it."""
        current, self._current = self._current, {}
        found: list[Anomaly] = []
        for subject in set(current) | set(self._baselines):
            baseline = self._baselines.get(subject)
            if baseline is None:
                if len(self._baselines) >= self.settings.max_subjects:
                    continue
                baseline = self._baselines[subject] = _Baseline()
            window = current.get(subject) or _Window()
            if baseline.windows >= self.settings.warmup_windows:
                found.extend(self._judge(subject, window, baseline, window_end))
            self._learn(window, baseline)
        return found

    def _judge(self, key: _Subject, w: _Window, b: _Baseline, end: float) -> Iterable[Anomaly]:
        s = self.settings
        subject = f"{key[0]}:{key[1]}"
        volume_limit = max(s.volume_factor * b.volume.mean, b.volume.mean + s.sigmas * math.sqrt(b.volume.variance))
        if w.requests >= s.min_requests and w.requests > volume_limit:
            yield Anomaly("volume_spike", subject, w.requests, b.volume.mean, end)
        if w.requests >= s.min_requests and w.errors >= s.min_events and b.error_rate.folds >= s.warmup_windows:
            rate = w.errors / w.requests
            if rate > s.error_rate_factor * max(b.error_rate.mean, 0.01):
                yield Anomaly("error_rate_spike", subject, rate, b.error_rate.mean, end)
        if w.requests >= s.min_requests and b.p95.folds >= s.warmup_windows:
            p95 = w.p95()
            if p95 > s.latency_factor * b.p95.mean:
                yield Anomaly("latency_spike", subject, p95, b.p95.mean, end)
        failures_limit = max(s.auth_failure_factor * b.auth_failures.mean,
                             b.auth_failures.mean + s.sigmas * math.sqrt(b.auth_failures.variance))
        if w.auth_failures >= s.min_events and w.auth_failures > failures_limit:
            yield Anomaly("auth_failure_spike", subject, w.auth_failures, b.auth_failures.mean, end)
        burn_limit = max(s.budget_burn_factor * b.burn.mean, b.burn.mean + s.sigmas * math.sqrt(b.burn.variance))
        if w.burn >= s.min_burn and w.burn > burn_limit:
            yield Anomaly("budget_burn_spike", subject, round(w.burn, 6), b.burn.mean, end)

    def _learn(self, w: _Window, b: _Baseline) -> None:
        alpha = self._alpha
        b.volume.fold(w.requests, alpha)
        b.auth_failures.fold(w.auth_failures, alpha)
        b.burn.fold(w.burn, alpha)
        if w.requests:  # rates and latency only from windows that had traffic
            b.error_rate.fold(w.errors / w.requests, alpha)
            b.p95.fold(w.p95(), alpha)
        b.windows += 1

    @property
    def subjects(self) -> int:
        return len(self._baselines)
