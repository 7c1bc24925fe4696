"""The GCRA limiter never over-admits, agrees with an exact model, and a refusal spends nothing.

Times are drawn on a whole-millisecond grid and the reference model uses ``Fraction``, so the model
is exact; with integer windows every distinct GCRA boundary is at least 1e-4 s from a request time,
far beyond the store's float slack, so store and model must agree on every single decision.

The bound (from ``limiting/gcra.py``): after each admission ``tat - tolerance <= now`` and each admitted
unit pushes ``tat`` by ``emission``, so the units admitted in ``[t0, t1]`` satisfy
``emission * n <= (t1 - t0) + tolerance``, i.e. ``n <= capacity + floor((t1 - t0) / emission)``.
(So a window can hold up to ``capacity + limit - 1`` units, not ``limit``: a GCRA burst then the rate.)
"""

from __future__ import annotations

import math
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from portcullis.config.types import RateWindow
from portcullis.limiting.rules import LimitRule
from portcullis.stores.memory import MemoryCounterStore

START = 1000

sequences = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3000), st.integers(min_value=1, max_value=3)),  # (ms step, cost)
    min_size=1, max_size=120,
)
gcra_rules = st.builds(
    lambda limit, window, burst: LimitRule(name="a", windows=[RateWindow(limit, float(window))], burst=burst),
    st.integers(min_value=1, max_value=10),
    st.integers(min_value=1, max_value=60),
    st.one_of(st.none(), st.integers(min_value=1, max_value=15)),
)
other_rules = st.builds(
    lambda limit, window: LimitRule(name="b", windows=[RateWindow(limit, float(window))]),
    st.integers(min_value=1, max_value=10),
    st.sampled_from([1, 5, 60, 3600]),  # 3600: a sliding window
)


class ExactGcra:
    """Reference GCRA in exact rational arithmetic."""

    def __init__(self, limit: int, window_s: int, capacity: int) -> None:
        self.emission = Fraction(window_s, limit)
        self.tolerance = self.emission * capacity
        self.tat: Fraction | None = None

    def consume(self, now: Fraction, cost: int) -> bool:
        base = max(self.tat, now) if self.tat is not None else now
        new_tat = base + self.emission * cost
        if new_tat - self.tolerance > now:
            return False
        self.tat = new_tat
        return True


def _times(sequence: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Cumulative milliseconds since START, with costs."""
    out, ms = [], 0
    for step, cost in sequence:
        ms += step
        out.append((ms, cost))
    return out


def _seconds(ms: int) -> float:
    return START + ms / 1000


@settings(max_examples=200, deadline=None)
@given(sequences, gcra_rules)
def test_gcra_agrees_with_an_exact_model_and_respects_its_bound(sequence: list[tuple[int, int]], rule: LimitRule) -> None:
    window = rule.windows[0]
    capacity = rule.burst if rule.burst is not None else window.limit
    model = ExactGcra(window.limit, int(window.window_s), capacity)
    store = MemoryCounterStore()
    admitted: list[tuple[Fraction, int]] = []
    for ms, cost in _times(sequence):
        now = START + Fraction(ms, 1000)
        got = store.apply_now([(rule, "k")], _seconds(ms), cost, commit=True).allowed
        assert got == model.consume(now, cost), f"store and model disagree at +{ms} ms, cost {cost}"
        if got:
            admitted.append((now, cost))
    for i, (t0, _) in enumerate(admitted):
        units = 0
        for t1, cost in admitted[i:]:
            units += cost
            bound = capacity + math.floor((t1 - t0) / model.emission)
            assert units <= bound, f"{units} units admitted in [{t0}, {t1}], bound {bound}"


@settings(max_examples=200, deadline=None)
@given(sequences, gcra_rules, other_rules)
def test_a_refusal_by_another_rule_spends_nothing(
    sequence: list[tuple[int, int]], rule_a: LimitRule, rule_b: LimitRule
) -> None:
    both = MemoryCounterStore()
    replay = MemoryCounterStore()  # sees only the requests ``both`` admitted, and only rule A
    for ms, cost in _times(sequence):
        now = _seconds(ms)
        if both.apply_now([(rule_a, "k"), (rule_b, "k")], now, cost, commit=True).allowed:
            assert replay.apply_now([(rule_a, "k")], now, cost, commit=True).allowed
        for probe in (1, 2, 3):
            seen = both.apply_now([(rule_a, "k")], now, probe, commit=False)
            expected = replay.apply_now([(rule_a, "k")], now, probe, commit=False)
            assert seen == expected, f"rule A's state diverged at +{ms} ms"
