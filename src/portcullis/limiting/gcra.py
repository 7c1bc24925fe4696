"""GCRA (generic cell rate algorithm): a token bucket kept as one number, the theoretical arrival time.

Why GCRA: one float of state per key, exact, and O(1) per decision, which is what a Redis script can
also do in one call. ``tat`` is when the bucket would be full again; a request of ``cost`` is allowed
when ``max(tat, now) + cost * emission - tolerance <= now``.

Guarantee: in any interval of length ``t``, at most ``capacity + t / emission`` units are admitted
(a burst of ``capacity``, then the steady rate). Pure: no I/O, no clock; ``now`` is an argument.
"""

from __future__ import annotations

import math

__all__ = ["gcra_check", "gcra_remaining"]

_EPS = 1e-9


def gcra_check(tat: float, now: float, emission_s: float, tolerance_s: float, cost: int) -> tuple[bool, float, float]:
    """Returns (allowed, new_tat, retry_after_s). On refusal ``new_tat`` is the old state."""
    base = tat if tat > now else now
    new_tat = base + emission_s * cost
    allow_at = new_tat - tolerance_s
    if allow_at > now + _EPS:
        return False, tat, allow_at - now
    return True, new_tat, 0.0


def gcra_remaining(tat: float, now: float, emission_s: float, tolerance_s: float) -> tuple[int, float]:
    """Units that could still be admitted now, and seconds until the bucket is full again."""
    used = (tat - now) if tat > now else 0.0
    remaining = math.floor((tolerance_s - used) / emission_s + _EPS)
    return max(0, remaining), used
