"""Limit rules and decisions: the value types shared by the algorithms, the stores and the policy.

Why precomputed windows: a rule is built once per config load, and the per-request path should only
do arithmetic. Each window knows its algorithm: GCRA (a token bucket in one number) for windows of a
minute or less, where bursts matter and exactness is cheap; a sliding-window counter for longer
windows, where one GCRA would let a client spend a whole day's quota in one burst.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from portcullis.config.types import RateWindow

__all__ = ["GCRA_MAX_WINDOW_S", "LimitDecision", "LimitRule", "QuotaState", "WindowSpec"]

GCRA_MAX_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """One window of a rule, with its algorithm's constants."""

    index: int
    limit: int
    window_s: float
    gcra: bool
    emission_s: float  # GCRA: time one unit of quota takes to come back
    tolerance_s: float  # GCRA: emission * capacity (burst depth)


@dataclass(frozen=True, slots=True, init=False)
class LimitRule:
    """A named set of windows, all enforced at once. ``burst`` deepens the shortest window.

    ``on_store_failure`` is this rule's answer when the shared counter store is down ("open": the
    local share, "closed": refuse); ``None`` follows the store's default."""

    name: str
    windows: tuple[RateWindow, ...]
    burst: int | None
    specs: tuple[WindowSpec, ...]
    on_store_failure: str | None

    def __init__(
        self, *, name: str, windows: Sequence[RateWindow], burst: int | None = None,
        on_store_failure: str | None = None,
    ) -> None:
        if not windows:
            raise ValueError("a limit rule needs at least one window")
        ordered = tuple(sorted(windows, key=lambda w: w.window_s))
        specs = []
        for i, w in enumerate(ordered):
            emission = w.window_s / w.limit
            capacity = burst if (burst is not None and i == 0) else w.limit
            specs.append(WindowSpec(
                index=i, limit=w.limit, window_s=w.window_s, gcra=w.window_s <= GCRA_MAX_WINDOW_S,
                emission_s=emission, tolerance_s=emission * capacity,
            ))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "windows", ordered)
        object.__setattr__(self, "burst", burst)
        object.__setattr__(self, "specs", tuple(specs))
        object.__setattr__(self, "on_store_failure", on_store_failure)


@dataclass(frozen=True, slots=True)
class QuotaState:
    """A rule's most constrained window after the decision (for RateLimit headers)."""

    name: str
    limit: int
    window_s: float
    remaining: int
    reset_s: float


@dataclass(slots=True)  # not frozen: made per call, and a frozen init costs four times as much
class LimitDecision:
    allowed: bool
    retry_after_s: float
    violated: str | None
    quota: tuple[QuotaState, ...]
