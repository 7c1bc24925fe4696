"""The gateway's services and runtime: the ingress ones, plus what the egress side keeps.

Why subclasses: the ingress app and its policies need only ``ingress.runtime``; the egress
executor (for the admin API's breakers and budgets), its shared breaker states and its
process-lifetime state (the resolver tests replace, the budget counters that survive reloads)
belong to the composition that knows both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portcullis.egress.executor import EgressExecutor
from portcullis.egress.resolver import SystemResolver
from portcullis.egress.shared_breakers import SharedBreakers
from portcullis.egress.ssrf import Resolver
from portcullis.ingress.app import GatewayApp
from portcullis.ingress.runtime import Runtime, Services
from portcullis.observability.budget_usage import BudgetUsage
from portcullis.stores.base import EgressStateStore, ReservationStore
from portcullis.stores.memory_budgets import MemoryBudgetStore
from portcullis.stores.memory_reservations import MemoryReservationStore

__all__ = ["GatewayRuntime", "GatewayServices", "serving_runtime"]


@dataclass(slots=True)
class GatewayServices(Services):
    egress_resolver: Resolver = field(default_factory=SystemResolver)  # tests inject fixed answers
    egress_budgets: EgressStateStore = field(default_factory=MemoryBudgetStore)  # survives reloads
    budget_usage: BudgetUsage | None = None  # how full the egress budgets are, for their gauges
    llm_reservations: ReservationStore = field(default_factory=MemoryReservationStore)  # survives reloads


@dataclass(slots=True, eq=False)
class GatewayRuntime(Runtime):
    services: GatewayServices  # the ingress runtime's field, with the egress side's state
    egress: EgressExecutor | None = None  # the egress pipeline behind every door, for the admin API
    breaker_sync: SharedBreakers | None = None  # with shared state: breakers move on every instance

    async def start(self) -> None:
        await Runtime.start(self)
        if self.breaker_sync is not None:
            await self.breaker_sync.load()

    async def aclose(self) -> None:
        if self.breaker_sync is not None:
            await self.breaker_sync.aclose()
        await Runtime.aclose(self)  # closes the egress door, and with it the executor
        if self.egress is not None:
            await self.egress.aclose()  # again, harmlessly; the only close when just the proxy door uses it


def serving_runtime(app: GatewayApp) -> GatewayRuntime:
    """The runtime ``app`` serves now, as the gateway built it (``build_runtime`` builds only these)."""
    runtime = app.runtime
    if not isinstance(runtime, GatewayRuntime):
        raise TypeError("the app serves a runtime the gateway did not build")
    return runtime
