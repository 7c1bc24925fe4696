"""A call's priority class: the header only where the route allows it, then workflow, consumer, defaults."""

from __future__ import annotations

from typing import Any

import pytest

from portcullis.config.egress import EgressConfig
from portcullis.egress.priority import RoutePriority, build_bulkheads
from portcullis.errors import MalformedRequest
from portcullis.testing import ManualClock

PRIORITIES = {"workflows": {"incident": "critical", "nightly": "bulk"}, "consumers": {"importer": "low"}}


def config(bulkhead: dict[str, Any] | None) -> EgressConfig:
    route: dict[str, Any] = {"name": "llm", "url": "https://api.example.com"}
    if bulkhead is not None:
        route["bulkhead"] = bulkhead
    return EgressConfig.model_validate({"routes": [route], "priorities": PRIORITIES})


def priority(bulkhead: dict[str, Any] | None = None) -> RoutePriority:
    c = config(bulkhead)
    return RoutePriority(c, c.routes[0])


@pytest.mark.parametrize(("workflow", "consumer", "expected"), [
    ("incident", "importer", "critical"),  # the workflow wins over the consumer
    ("other", "importer", "low"),
    ("other", "alice", "normal"),
])
def test_the_workflow_then_the_consumer_then_the_default_decide(workflow: str, consumer: str, expected: str) -> None:
    assert priority({"max_concurrent": 1}).of(workflow_id=workflow, consumer=consumer) == expected


def test_the_route_default_comes_before_the_egress_default() -> None:
    assert priority({"max_concurrent": 1, "default_priority": "high"}).of(workflow_id="x", consumer="y") == "high"


def test_a_listed_header_value_chooses_the_class() -> None:
    route = priority({"max_concurrent": 1, "header_priorities": ["low", "bulk"]})
    assert route.of(workflow_id="incident", consumer="alice", header_values=[" BULK "]) == "bulk"


@pytest.mark.parametrize("values", [["critical"], ["urgent"], ["low", "bulk"]],
                         ids=["jump-the-queue", "unknown", "sent-twice"])
def test_a_header_value_the_route_does_not_list_is_refused(values: list[str]) -> None:
    route = priority({"max_concurrent": 1, "header_priorities": ["low", "bulk"]})
    with pytest.raises(MalformedRequest) as refused:
        route.of(workflow_id="wf", consumer="alice", header_values=values)
    assert refused.value.reason == "priority_not_allowed"


def test_a_route_that_lists_no_classes_does_not_read_the_header() -> None:
    assert priority({"max_concurrent": 1}).of(workflow_id="wf", consumer="a", header_values=["critical"]) == "normal"


def test_bulkheads_are_built_for_the_routes_that_have_one() -> None:
    with_one = build_bulkheads(config({"max_concurrent": 3, "max_queue": 7, "queue_timeout": "2s"}),
                               clock=ManualClock())
    assert set(with_one) == {"llm"}
    built = with_one["llm"].config
    assert (built.max_concurrent, built.max_queue, built.queue_timeout_s, built.default_class) == (3, 7, 2.0, "normal")
    assert built.classes == ("critical", "high", "normal", "low", "bulk")
    assert build_bulkheads(config(None), clock=ManualClock()) == {}
