"""Sliding-window counter: two fixed buckets, the previous one weighted by how much of it still overlaps.

Why for long windows: a per-hour or per-day quota must not be spendable in one burst, and an exact
sliding log would keep one timestamp per request. Two counters per key are enough.

Accuracy: the estimate assumes the previous bucket's requests were spread evenly over it. Within
one fixed bucket the limit is never exceeded. Over an arbitrary span of ``window_s`` the true count
can exceed ``limit`` when the previous bucket's requests were bunched at its end; the pathological
bound is ``2 * limit`` (a full previous bucket in its last instant, then the weighted estimate
admitting as it decays). For steady traffic the error is a fraction of a percent. Short windows,
where bursts matter, use exact GCRA instead.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import math

__all__ = ["sliding_check"]

# Float slack for the admission test. Without it, waiting exactly the returned ``retry_after_s``
# could still be refused: at that instant ``estimate + cost == limit`` in exact arithmetic, but
# ``now / window_s - index`` rounds (e.g. 1110 / 100 - 11 = 0.09999...), so the float estimate lands
# a hair above the limit (found by tests/unit/limiting/test_sliding_window_math.py). Relative to
# ``limit`` because the rounding error scales with ``previous``; counts are integers, so this slack
# never admits an extra unit for any limit below 1e9.
_REL_EPS = 1e-9


def sliding_check(
    bucket: int, current: int, previous: int, now: float, window_s: float, limit: int, cost: int
) -> tuple[bool, int, int, int, float, int]:
    """Returns (allowed, bucket, current, previous, retry_after_s, remaining) after rolling to ``now``."""
    index = math.floor(now / window_s)
    if index != bucket:
        previous = current if index == bucket + 1 else 0
        current = 0
        bucket = index
    elapsed = now / window_s - index  # fraction of the current bucket already passed
    weight = 1.0 - elapsed
    estimate = previous * weight + current
    if estimate + cost <= limit * (1.0 + _REL_EPS):
        remaining = math.floor(limit - estimate - cost)
        return True, bucket, current + cost, previous, 0.0, max(0, remaining)
    retry = _retry_after(current, previous, elapsed, window_s, limit, cost)
    return False, bucket, current, previous, retry, max(0, math.floor(limit - estimate))


def _retry_after(current: int, previous: int, elapsed: float, window_s: float, limit: int, cost: int) -> float:
    if current + cost <= limit and previous > 0:
        # wait until previous * (1 - f) + current + cost <= limit, within this bucket
        f = 1.0 - (limit - current - cost) / previous
        return max(0.0, (f - elapsed) * window_s)
    # next bucket: current becomes previous
    if cost > limit:
        return window_s * 2
    f = 1.0 - (limit - cost) / current if current > 0 else 0.0
    return max(0.0, (1.0 - elapsed) * window_s + max(0.0, f) * window_s)
