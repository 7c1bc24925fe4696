"""The sliding-window counter (windows over 60 s) stays within the bound its module documents.

GCRA's exactness and "a refusal spends nothing" are in ``test_limiter_never_over_admits.py``.
"""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.config.types import RateWindow
from portcullis.limiting.rules import LimitRule
from portcullis.stores.memory import MemoryCounterStore


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=400.0), min_size=1, max_size=150))
def test_sliding_window_stays_within_its_documented_bound(gaps: list[float]) -> None:
    limit, window = 10, 3600.0
    store = MemoryCounterStore()
    rule = LimitRule(name="hour", windows=[RateWindow(limit, window)])
    now = 1000.0
    admitted: list[float] = []
    for gap in gaps:
        now += gap
        if store.apply_now([(rule, "k")], now, 1, commit=True).allowed:
            admitted.append(now)
    for t in admitted:
        in_window = sum(1 for u in admitted if t - window < u <= t)
        assert in_window <= 2 * limit  # the pathological bound in limiting/sliding_window.py
        bucket = math.floor(t / window)
        assert sum(1 for u in admitted if math.floor(u / window) == bucket) <= limit
