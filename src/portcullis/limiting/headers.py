"""RateLimit-Policy, RateLimit and Retry-After header values (draft-ietf-httpapi-ratelimit-headers).

Why structured fields: the current draft describes policies as ``"name";q=<quota>;w=<window>`` and
current state as ``"name";r=<remaining>;t=<seconds to reset>``, one item per policy. Each rule
reports its most constrained window.
"""

from __future__ import annotations

import math

from portcullis.limiting.rules import LimitDecision

__all__ = ["ratelimit_headers", "retry_after_value"]


def retry_after_value(seconds: float) -> bytes:
    """Whole seconds, rounded up, at least 1 (RFC 9110 section 10.2.3)."""
    return str(max(1, math.ceil(seconds))).encode()


def ratelimit_headers(decision: LimitDecision) -> tuple[tuple[bytes, bytes], ...]:
    if not decision.quota:
        return ()
    policy = ", ".join(f'"{q.name}";q={q.limit};w={math.ceil(q.window_s)}' for q in decision.quota)
    state = ", ".join(f'"{q.name}";r={q.remaining};t={math.ceil(q.reset_s)}' for q in decision.quota)
    return ((b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode()))
