"""Scaled limit rules: a rule with every window's limit (and its burst) multiplied by a factor < 1.

Why a scaled *rule* rather than a scaled store: the memory store, the Redis script and the
failover's local share all take their limits from the rule, so one scaled rule applies the
emergency to every backend alike, with no new store code. The scaled rule keeps the rule's name,
so it reads and writes the same counters as the unscaled one.

How a factor meets existing counter state (documented in the README, "Incident controls"):

- GCRA windows keep one number, the theoretical arrival time. Scaling the limit lengthens the
  emission interval by 1/f and shortens the capacity by f, and their product, the tolerance, stays
  the window: the fraction of the bucket already used carries over unchanged, and it refills at the
  scaled rate. A client that had just spent its burst waits ``1/f`` times longer for the next slot.
- Sliding windows count requests; what was counted before the emergency counts against the scaled
  limit, so a client already above the new limit is refused until the window decays (wanted: the
  emergency takes effect at once, not after a window).
- Limits never drop below 1 per window.

``ScaledRules`` caches the scaled rules by (rule, factor); factors come in steps of
``emergency.FACTOR_STEP``, and the cache is cleared when it passes ``_MAX_CACHED`` entries, so
reloads and long ramps cannot grow it without bound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from portcullis.limiting.rules import LimitRule

__all__ = ["ScaledRules", "scale_rule"]

_MAX_CACHED = 4096


def scale_rule(rule: LimitRule, factor: float) -> LimitRule:
    """``rule`` with every limit and its burst times ``factor`` (rounded down, at least 1)."""
    windows = [replace(w, limit=max(1, math.floor(w.limit * factor + 1e-9))) for w in rule.windows]
    burst = max(1, math.floor(rule.burst * factor + 1e-9)) if rule.burst is not None else None
    return LimitRule(name=rule.name, windows=windows, burst=burst, on_store_failure=rule.on_store_failure)


class ScaledRules:
    """Scaled versions of rules, made once per (rule, factor)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[int, float], tuple[LimitRule, LimitRule]] = {}

    def rule(self, rule: LimitRule, factor: float) -> LimitRule:
        key = (id(rule), factor)
        cached = self._cache.get(key)
        if cached is not None and cached[0] is rule:
            return cached[1]
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        scaled = scale_rule(rule, factor)
        self._cache[key] = (rule, scaled)
        return scaled

    def hits(self, hits: Sequence[tuple[LimitRule, str]], factor: float) -> list[tuple[LimitRule, str]]:
        return [(self.rule(rule, factor), subject) for rule, subject in hits]
