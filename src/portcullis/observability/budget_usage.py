"""How full the egress budgets are, for gauges and alerts: per route and budget, and the top burners.

Why a tracker beside the counters: the counters (memory or Redis) answer "may this call spend?",
one key at a time; an operator asks "which budget is about to run out, and whose?". Scanning the
counters at scrape time would be a Redis ``SCAN`` over every execution's keys. Instead every call's
spend tells the tracker what its counters hold afterwards (shared totals when the counters are in
Redis, so each instance sees the cluster's figure for the subjects it serves), and the tracker
keeps the most recent figure per counter.

What it exports (``BudgetUsageCollector`` in ``observability.metrics``):

- ``portcullis_egress_budget_limit{route,budget}``: each configured budget a call to the route
  spends from (calls, or currency units for cost budgets);
- ``portcullis_egress_budget_used_ratio{route,budget}``: the fullest counter of that budget among
  those this route's calls touched and whose window is still open (0 to 1): the "budget at 80 %"
  alert reads it. An LLM route's token and cost budgets (``llm_…``) are here too, fed by each
  reservation's steps (``held``): their share counts what is used and what calls in flight hold;
- ``portcullis_egress_budget_top_used_ratio{budget,subject_kind,subject}``: the ``top_n``
  workflows and users per budget by share used. Executions are never named (one series each
  would grow without bound), nor route-wide LLM budgets (a route is no burner; its gauge says it
  all); workflows and users appear only while among the top few, so the series are at most
  ``top_n`` per budget.

Memory: at most ``capacity`` counters are remembered. When full, expired counters go first, then
the emptiest half, in one pass (amortised O(log n) per call), so the fullest, which the gauges
show, stay. A window's end is taken from the first spend this instance saw (the store anchors it at
the first spend anywhere, which can only be earlier), so a counter may be shown up to one window
too long, never too short.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from portcullis.clock import Clock
from portcullis.stores.base import BudgetLine

__all__ = ["BudgetUsage", "RouteUsage", "TopBurner", "budget_subject"]


@dataclass(frozen=True, slots=True)
class RouteUsage:
    """One (route, budget) pair: its limit and the fullest open counter's share used."""

    route: str
    budget: str
    limit: float
    used_ratio: float


@dataclass(frozen=True, slots=True)
class TopBurner:
    """A workflow or user among the fullest of one budget."""

    budget: str
    subject_kind: str  # "workflow" or "user"
    subject: str
    used_ratio: float


_BURNERS = frozenset({"workflow", "user"})  # the subjects ``top`` names


@dataclass(slots=True)
class _Counter:
    budget: str
    subject_kind: str
    subject: str
    ratio: float
    ends_at: float
    routes: set[str] = field(default_factory=set)


class Counted(Protocol):
    """A counter a call spends from: a call budget's ``Spend`` or an LLM route's ``BudgetLine``."""

    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def limit(self) -> int: ...
    @property
    def window_s(self) -> float | None: ...  # None: a lifetime total


def budget_subject(budget: str, workflow_id: str, execution_id: str, user: str) -> tuple[str, str]:
    """Whose counter a budget is: ("execution", id), ("workflow", id), ("user", name), or ("route",
    "*") for an LLM route's route-wide budgets."""
    name = budget.removeprefix("llm_")
    if name.startswith("execution"):
        return "execution", f"{workflow_id}/{execution_id}"
    if name.startswith("user"):
        return "user", user
    if name.startswith("route"):
        return "route", "*"
    return "workflow", workflow_id  # workflow_* and endpoint_calls:<route>


class BudgetUsage:
    """See the module docstring. One per gateway process; survives reloads (``configure`` on each)."""

    def __init__(self, clock: Clock, *, top_n: int = 5, capacity: int = 4096) -> None:
        self._clock = clock
        self.top_n = top_n
        self._capacity = capacity
        self._counters: dict[str, _Counter] = {}
        self._limits: dict[tuple[str, str], float] = {}

    def configure(self, limits: Mapping[str, Mapping[str, float]], *, top_n: int | None = None) -> None:
        """The budgets each route spends from, ``{route: {budget: limit}}``, from the loaded config."""
        self._limits = {(route, budget): limit
                        for route, budgets in limits.items() for budget, limit in budgets.items()}
        if top_n is not None:
            self.top_n = top_n

    def spent(self, route: str, items: Sequence[Counted], used: Sequence[int], refused: int | None,
              subject: Callable[[int], tuple[str, str]]) -> None:
        """A call's spend: ``used`` is what each counter holds after it (the store's answer). On a
        refusal nothing was spent and the refusing counter is full: it is recorded as such.
        ``subject(i)``: whose counter ``items[i]`` is (``budget_subject``), asked for a new counter only."""
        now = self._clock.monotonic()
        counters = self._counters
        for index, item in enumerate(items):
            if refused is not None:
                if index != refused:
                    continue
                ratio = 1.0
            else:
                ratio = min(used[index] / item.limit, 1.0) if item.limit else 0.0
            counter = counters.get(item.key)
            if counter is None or counter.ends_at <= now:
                if counter is None and len(counters) >= self._capacity:
                    self._make_room(now)
                kind, whose = subject(index)
                window = math.inf if item.window_s is None else item.window_s
                counter = counters[item.key] = _Counter(item.name, kind, whose, ratio, now + window)
            counter.ratio = ratio
            counter.routes.add(route)

    def held(self, route: str, lines: Sequence[BudgetLine], left: Sequence[int],
             subject: Callable[[int], tuple[str, str]]) -> None:
        """An LLM reservation's step: ``left`` is what each line has left after it (limit - used -
        held: the store's answer; for a refused reservation, the refusing line's ``available``)."""
        self.spent(route, lines, [line.limit - n for line, n in zip(lines, left, strict=True)], None, subject)

    def forget(self, keys: Iterable[str]) -> None:
        """Counters an operator reset: they start again from empty."""
        for key in keys:
            self._counters.pop(key, None)

    def routes(self) -> list[RouteUsage]:
        """Every configured (route, budget) with its fullest open counter (0 when none)."""
        now = self._clock.monotonic()
        peaks: dict[tuple[str, str], float] = {}
        for counter in self._counters.values():
            if counter.ends_at <= now:
                continue
            for route in counter.routes:
                pair = (route, counter.budget)
                if counter.ratio > peaks.get(pair, 0.0):
                    peaks[pair] = counter.ratio
        return [RouteUsage(route, budget, limit, peaks.get((route, budget), 0.0))
                for (route, budget), limit in sorted(self._limits.items())]

    def top(self) -> list[TopBurner]:
        """The ``top_n`` fullest open workflow and user counters of each budget, fullest first."""
        if self.top_n <= 0:
            return []
        now = self._clock.monotonic()
        by_budget: dict[str, list[_Counter]] = {}
        for counter in self._counters.values():
            if counter.ends_at > now and counter.subject_kind in _BURNERS and counter.ratio > 0:
                by_budget.setdefault(counter.budget, []).append(counter)
        out: list[TopBurner] = []
        for budget in sorted(by_budget):
            ranked = sorted(by_budget[budget], key=lambda c: (-c.ratio, c.subject))[: self.top_n]
            out.extend(TopBurner(budget, c.subject_kind, c.subject, c.ratio) for c in ranked)
        return out

    def _make_room(self, now: float) -> None:
        """Called when a new counter finds the table full: drop the ended ones, and unless that freed a
        quarter of it, the emptiest half. Each scan frees at least a quarter, so a flood of new
        counters pays for one scan per quarter of the capacity, never one per counter."""
        counters = self._counters
        for key in [k for k, c in counters.items() if c.ends_at <= now]:
            del counters[key]
        if len(counters) > self._capacity * 3 // 4:
            emptiest = sorted(counters, key=lambda k: counters[k].ratio)[: len(counters) // 2 or 1]
            for key in emptiest:
                del counters[key]

    def __len__(self) -> int:
        return len(self._counters)
