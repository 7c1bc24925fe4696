"""The bounded tables under the memory stores: oldest first, swept as calls go by, capped.

The last test is about cost, asserted without a clock: every memory store's table must be an
``LruTable`` (an ``OrderedDict``), because a plain ``dict``'s first entry is found by walking the
slots deleted before it. A sweep that drops the oldest entry call after call then scans a growing
run of dead slots (82 us a call at 400,000 entries on CPython 3.11), which a caller rotating
addresses or execution ids chooses to trigger. The stores create their tables themselves, so the
test reads them where they keep them.
"""

from __future__ import annotations

import pytest

from portcullis.stores.lru import SWEEP_PER_CALL, LruTable, evict, refresh, sweep
from portcullis.stores.memory import MemoryCounterStore
from portcullis.stores.memory_budgets import MemoryBudgetStore
from portcullis.stores.memory_reservations import MemoryReservationStore


def _table(ends: dict[str, float]) -> LruTable[str, tuple[float]]:
    table: LruTable[str, tuple[float]] = LruTable()
    for key, end in ends.items():
        table[key] = (end,)
    return table


def test_refresh_makes_an_entry_the_most_recent_and_keeps_the_others_in_order() -> None:
    table = _table({"a": 1.0, "b": 2.0, "c": 3.0})
    refresh(table, "a", (9.0,))
    refresh(table, "d", (4.0,))
    assert list(table.items()) == [("b", (2.0,)), ("c", (3.0,)), ("a", (9.0,)), ("d", (4.0,))]


def test_sweep_drops_ended_entries_oldest_first_and_stops_at_a_live_one() -> None:
    table = _table({"a": 1.0, "b": 2.0, "live": 10.0, "ended-but-newer": 3.0})
    sweep(table, now=5.0)
    assert list(table) == ["live", "ended-but-newer"]


def test_sweep_drops_at_most_its_share_per_call() -> None:
    table = _table({f"k{i}": 1.0 for i in range(SWEEP_PER_CALL + 3)})
    sweep(table, now=5.0)
    assert len(table) == 3


def test_evict_forgets_the_least_recently_updated_past_the_cap() -> None:
    table = _table({"a": 9.0, "b": 9.0, "c": 9.0, "d": 9.0})
    refresh(table, "a", (9.0,))
    evict(table, cap=2)
    assert list(table) == ["d", "a"]


@pytest.mark.parametrize("churn", [10, 50_000])
def test_a_table_swept_after_heavy_churn_still_finds_its_oldest_live_entry(churn: int) -> None:
    table = _table({})
    for i in range(churn):  # entries that end, each swept away by a later call
        refresh(table, f"gone-{i}", (float(i),))
        sweep(table, now=float(i))
    refresh(table, "live", (churn + 100.0,))
    sweep(table, now=float(churn))
    assert list(table) == ["live"]


def test_every_memory_store_keeps_its_tables_where_the_oldest_entry_costs_o1() -> None:
    tables = [
        MemoryCounterStore()._entries,
        MemoryBudgetStore()._counters,
        MemoryBudgetStore()._starts,
        MemoryReservationStore()._lines,
    ]
    assert all(type(table) is LruTable for table in tables)
