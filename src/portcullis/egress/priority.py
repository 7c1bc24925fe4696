"""A call's priority class for its endpoint's bulkhead, and the bulkheads built from the config.

Why a rule order and a header allow-list: the class decides who waits and who is shed, so it must
not be the caller's to choose freely. In order: the ``X-Priority`` header, only when the route
lists that value in ``bulkhead.header_priorities`` (any other value is refused with 400, so a
caller learns the header was not taken rather than silently running at another class); the
workflow's class; the consumer's; the route's default; the egress-wide default. Listing only low
classes lets callers step aside without letting them jump the queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from portcullis.clock import Clock
from portcullis.config.egress import EgressConfig, EgressRouteConfig
from portcullis.egress.bulkhead import Bulkhead, BulkheadConfig, BulkheadObserver, Timer
from portcullis.errors import MalformedRequest

__all__ = ["PRIORITY_HEADER", "RoutePriority", "build_bulkheads"]

PRIORITY_HEADER = "x-priority"


class RoutePriority:
    """Picks a call's class on one route (compiled at load)."""

    def __init__(self, config: EgressConfig, route: EgressRouteConfig) -> None:
        priorities = config.priorities
        bulkhead = route.bulkhead
        self._header = frozenset(bulkhead.header_priorities) if bulkhead is not None else frozenset()
        self._workflows = dict(priorities.workflows)
        self._consumers = dict(priorities.consumers)
        self.default = (bulkhead.default_priority if bulkhead is not None else None) or priorities.default

    def of(self, *, workflow_id: str, consumer: str, header_values: Sequence[str] = ()) -> str:
        """The class of a call; ``MalformedRequest`` (``priority_not_allowed``) for a header the
        route does not take, or sent twice. A route that lists no classes ignores the header."""
        if header_values and self._header:
            if len(header_values) > 1:
                raise MalformedRequest("priority_not_allowed")
            asked = header_values[0].strip().lower()
            if asked not in self._header:
                raise MalformedRequest("priority_not_allowed")
            return asked
        return self._workflows.get(workflow_id) or self._consumers.get(consumer) or self.default


def build_bulkheads(
    config: EgressConfig, *, clock: Clock, observer: BulkheadObserver | None = None, timer: Timer | None = None,
) -> dict[str, Bulkhead]:
    """A bulkhead for every route that has one, by route name."""
    classes = tuple(config.priorities.classes)
    out = {}
    for route in config.routes:
        b = route.bulkhead
        if b is None:
            continue
        out[route.name] = Bulkhead(route.name, BulkheadConfig(
            max_concurrent=b.max_concurrent, max_queue=b.max_queue, queue_timeout_s=b.queue_timeout,
            classes=classes, default_class=b.default_priority or config.priorities.default,
            retry_after_s=b.retry_after,
        ), clock=clock, timer=timer, observer=observer)
    return out
