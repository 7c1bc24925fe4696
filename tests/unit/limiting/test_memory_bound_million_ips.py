"""A million distinct client addresses cannot grow the in-memory limiter without bound.

An attacker controls how many source addresses it shows (IPv6 gives plenty), so per-IP limit state
must expire. Assertions are on entry counts, never on time.
"""

from __future__ import annotations

import pytest

from portcullis.config.types import parse_rate
from portcullis.limiting.rules import LimitRule
from portcullis.stores.memory import MemoryCounterStore


@pytest.mark.slow
def test_one_million_distinct_ips_keep_the_store_small() -> None:
    store = MemoryCounterStore()
    rule = LimitRule(name="per-ip", windows=[parse_rate("10/second")])
    now = 1000.0
    peak = 0
    for i in range(1_000_000):
        ip = f"2001:db8::{i >> 16:x}:{i & 0xFFFF:x}"
        decision = store.apply_now([(rule, ip)], now, 1, commit=True)
        assert decision.allowed
        now += 0.001  # a thousand new addresses a second
        if i % 50_000 == 0:
            peak = max(peak, store.entry_count())
    # each entry idles out 0.1 s after its request (one token of a 10/second bucket): only the
    # addresses seen in the last fraction of a second can still be held
    assert store.entry_count() <= 200
    assert peak <= 200


def test_the_hard_cap_holds_even_when_nothing_expires() -> None:
    store = MemoryCounterStore(max_entries=1000)
    rule = LimitRule(name="per-ip-day", windows=[parse_rate("10/day")])
    for i in range(5000):
        store.apply_now([(rule, f"198.51.100.{i % 256}/{i}")], 1000.0, 1, commit=True)
    assert store.entry_count() == 1000


def test_eviction_takes_the_least_recently_updated_first() -> None:
    store = MemoryCounterStore(max_entries=2)
    rule = LimitRule(name="r", windows=[parse_rate("1/day")])
    store.apply_now([(rule, "a")], 1000.0, 1, commit=True)
    store.apply_now([(rule, "b")], 1000.0, 1, commit=True)
    store.apply_now([(rule, "c")], 1000.0, 1, commit=True)  # evicts "a"
    assert not store.apply_now([(rule, "c")], 1000.0, 1, commit=True).allowed  # "c" is remembered
    assert store.apply_now([(rule, "a")], 1000.0, 1, commit=True).allowed  # "a" was forgotten (fails open)
