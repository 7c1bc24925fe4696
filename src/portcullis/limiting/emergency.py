"""Emergency limit factors: how much of its configured rate every limit of a request may use now.

Why in ``limiting``: an emergency scales the limits themselves (``scaling.py``), the same way for the
memory and the Redis counters; what decides the factor is pure arithmetic over wall time, kept here
beside the algorithms it feeds. The limits are scaled in the SRE's sense of seed 000 section 6.3
("reduce limits temporarily, restore gradually"): a factor holds until ``until``, then ramps back
linearly to 1 over ``restore_s`` seconds, so a fleet does not go from 10% to 100% of its rate in one
step after an attack.

Which emergencies apply to a request: the whole gateway's, its route's and its consumer's; the
smallest factor wins (several operators reacting at once never loosen each other's limits).
Factors are rounded *down* to ``FACTOR_STEP``, so a ramp yields at most 100 distinct scaled rules
per limit (``scaling.ScaledRules`` caches them) and never admits more than the exact ramp would.
Pure: no I/O, no clock; ``now`` is an argument.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["FACTOR_STEP", "MIN_FACTOR", "EmergencyFactor", "EmergencyTable", "ramp"]

FACTOR_STEP = 0.01
MIN_FACTOR = FACTOR_STEP


def ramp(factor: float, until: float, restore_s: float, now: float) -> float:
    """``factor`` until ``until``, then linearly back to 1.0 over ``restore_s`` seconds."""
    if now < until:
        return factor
    if restore_s <= 0 or now >= until + restore_s:
        return 1.0
    return factor + (1.0 - factor) * (now - until) / restore_s


@dataclass(frozen=True, slots=True)
class EmergencyFactor:
    """One emergency limit's schedule (wall seconds)."""

    factor: float
    until: float
    restore_s: float

    def at(self, now: float) -> float:
        return ramp(self.factor, self.until, self.restore_s, now)


class EmergencyTable:
    """The emergencies in force, indexed by what they cover. Built once per snapshot; ``factor`` is
    a few dict lookups."""

    __slots__ = ("_consumers", "_gateway", "_routes", "empty")

    def __init__(
        self, *, gateway: Sequence[EmergencyFactor] = (), routes: Mapping[str, Sequence[EmergencyFactor]] | None = None,
        consumers: Mapping[str, Sequence[EmergencyFactor]] | None = None,
    ) -> None:
        self._gateway = tuple(gateway)
        self._routes = {k: tuple(v) for k, v in (routes or {}).items()}
        self._consumers = {k: tuple(v) for k, v in (consumers or {}).items()}
        self.empty = not (self._gateway or self._routes or self._consumers)

    def factor(self, route: str | None, consumer: str | None, now: float) -> float:
        """The factor for a request on ``route`` by ``consumer`` at ``now``: 1.0 when none applies."""
        if self.empty:
            return 1.0
        lowest = 1.0
        for group in (self._gateway, self._routes.get(route or "", ()), self._consumers.get(consumer or "", ())):
            for emergency in group:
                value = emergency.at(now)
                if value < lowest:
                    lowest = value
        if lowest >= 1.0:
            return 1.0
        return max(MIN_FACTOR, math.floor(lowest / FACTOR_STEP + 1e-9) * FACTOR_STEP)
