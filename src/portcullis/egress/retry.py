"""Retries for egress calls: when a retry is safe, how long to wait, and how many an outage may cost.

Why each rule:
- **Only safe requests** (RFC 9110 section 9.2.2 idempotent methods, or any request carrying an
  ``Idempotency-Key``, the convention Stripe and others honour): retrying a POST that reached the
  provider can charge a card twice.
- **Exponential backoff with full jitter** (AWS Architecture Blog, "Exponential Backoff and
  Jitter"): ``uniform(0, min(cap, base * 2**attempt))`` spreads a crowd of clients that failed
  together, where plain exponential backoff keeps them in lock-step.
- **Retry-After is honoured, up to a cap**: a provider that says "in 2 s" is believed; one that
  says "in an hour" makes the call fail now rather than hold a worker for an hour.
- **A retry budget per endpoint** (Finagle's and Envoy's retry budgets): retries may add at most
  ``ratio`` of the recent requests (plus a small floor so a quiet endpoint can still retry), so a
  total outage multiplies the load on the provider by at most ``1 + ratio``, never by
  ``max_attempts``.
- **Adaptive retry after a failure streak** (the seed's probabilistic backoff for persistent
  failures): an endpoint that failed more than ``adaptive_after`` attempts in a row (five by
  default) is retried only with probability ``1 / failures``, so the longer an outage lasts, the
  fewer retries it draws, on top of the budget and the jitter; one success ends the streak. The
  streak is per endpoint and per process: it reacts within one instance's view, where the
  breaker (shared through Redis when configured) is the fleet-wide stop.

Pure: randomness and time are injected.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.clock import Clock

__all__ = [
    "FailureStreak", "RetryBudget", "RetryConfig", "adaptive_retry_allowed", "backoff_s", "may_retry_request",
    "parse_retry_after", "retry_delay_s",
]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_attempts: int = 3  # including the first
    base_s: float = 0.1
    cap_s: float = 5.0
    retry_after_cap_s: float = 30.0
    budget_ratio: float = 0.2
    budget_window_s: float = 10.0
    budget_min_per_s: float = 1.0  # the floor: a quiet endpoint may still retry this often
    adaptive_after: int | None = 5  # failures in a row beyond which a retry is a 1/failures draw; None: off

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("need max_attempts >= 1 and 0 < base_s <= cap_s")
        if not 0 <= self.budget_ratio <= 1 or self.budget_window_s <= 0 or self.budget_min_per_s < 0:
            raise ValueError("the retry budget needs 0 <= ratio <= 1 and a positive window")
        if self.adaptive_after is not None and self.adaptive_after < 0:
            raise ValueError("adaptive_after is a number of failures (0 or more) or None")


def may_retry_request(method: str, headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Idempotent by method, or made so by a non-empty ``Idempotency-Key`` (``headers`` as sent,
    lower-case names; of several, the last decides, as it would in a dict of them)."""
    if method.upper() in IDEMPOTENT_METHODS:
        return True
    for name, value in reversed(headers):
        if name == b"idempotency-key":
            return bool(value)
    return False


def backoff_s(attempt: int, config: RetryConfig, rng: random.Random) -> float:
    """Full jitter before retry number ``attempt`` (1 for the first retry)."""
    ceiling = min(config.cap_s, config.base_s * math.pow(2, attempt - 1))
    return rng.uniform(0, ceiling)


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds from a Retry-After value (delta-seconds or an HTTP date), or ``None`` if absent/invalid."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now_wall)


def retry_delay_s(
    attempt: int, retry_after: str | None, config: RetryConfig, rng: random.Random, now_wall: float
) -> float | None:
    """How long to wait before retry ``attempt``; ``None`` when the provider asks for longer than the cap."""
    asked = parse_retry_after(retry_after, now_wall)
    if asked is not None:
        return asked if asked <= config.retry_after_cap_s else None
    return backoff_s(attempt, config, rng)


class RetryBudget:
    """Recent requests and retries of one endpoint over a sliding window; may one more retry go?"""

    def __init__(self, config: RetryConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._requests: deque[float] = deque()
        self._retries: deque[float] = deque()

    def request(self) -> None:
        """Count a first attempt."""
        now = self._clock.monotonic()
        self._requests.append(now)
        self._trim(now)

    def try_retry(self) -> bool:
        """Spend one retry from the budget, or say no (nothing spent)."""
        now = self._clock.monotonic()
        self._trim(now)
        cfg = self._config
        allowed = cfg.budget_ratio * len(self._requests) + cfg.budget_min_per_s * cfg.budget_window_s
        if len(self._retries) + 1 > allowed:
            return False
        self._retries.append(now)
        return True

    def _trim(self, now: float) -> None:
        horizon = now - self._config.budget_window_s
        for q in (self._requests, self._retries):
            while q and q[0] <= horizon:
                q.popleft()


def adaptive_retry_allowed(failures: int, after: int | None, rng: random.Random) -> bool:
    """May a retry go when the endpoint has failed ``failures`` attempts in a row?

    Up to ``after`` failures: yes. Beyond: with probability ``1 / failures`` (one draw from ``rng``,
    and only then, so a healthy endpoint's jitter sequence is not disturbed)."""
    if after is None or failures <= after:
        return True
    return rng.random() < 1.0 / failures


class FailureStreak:
    """Consecutive failed attempts at one endpoint, ended by the first success."""

    __slots__ = ("_after", "failures")

    def __init__(self, after: int | None) -> None:
        self._after = after
        self.failures = 0

    def record(self, *, failed: bool) -> None:
        """Count an attempt's outcome (the breaker's notion of failure: 5xx, 429, timeout, no connection)."""
        self.failures = self.failures + 1 if failed else 0

    def allows_retry(self, rng: random.Random) -> bool:
        """The adaptive draw for the current streak (see ``adaptive_retry_allowed``)."""
        return adaptive_retry_allowed(self.failures, self._after, rng)
