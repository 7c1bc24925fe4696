"""Config of priorities, bulkheads, run modes and the execution lifetime: what loads and what is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from portcullis.config.egress import DEFAULT_PRIORITY_CLASSES, EgressConfig


def load(route: dict[str, Any] | None = None, **top: Any) -> EgressConfig:
    return EgressConfig.model_validate({"routes": [{"name": "llm", "url": "https://api.example.com", **(route or {})}],
                                        **top})


def test_the_defaults_add_no_cap_no_lifetime_and_five_classes() -> None:
    config = load()
    route = config.routes[0]
    assert route.bulkhead is None and not route.test_run and route.full_run_requires is None
    assert config.budgets.execution_max_lifetime is None
    assert tuple(config.priorities.classes) == DEFAULT_PRIORITY_CLASSES and config.priorities.default == "normal"
    assert config.run_modes.default == "full_run" and config.run_modes.allow_validate_only
    assert route.retry.adaptive_after == 5


def test_a_bulkhead_priorities_and_a_lifetime_load_with_units() -> None:
    config = load({"bulkhead": {"max_concurrent": 4, "max_queue": 20, "queue_timeout": "2s",
                                "header_priorities": ["low", "bulk"]}},
                  priorities={"workflows": {"nightly-report": "bulk"}, "consumers": {"pager": "critical"}},
                  budgets={"execution_max_lifetime": "15m"})
    bulkhead = config.routes[0].bulkhead
    assert bulkhead is not None and bulkhead.queue_timeout == 2.0 and bulkhead.header_priorities == ["low", "bulk"]
    assert config.budgets.execution_max_lifetime == 900.0


@pytest.mark.parametrize(("route", "top", "message"), [
    ({"bulkhead": {"max_concurrent": 0}}, {}, "greater than or equal to 1"),
    ({"bulkhead": {"max_concurrent": 1, "header_priorities": ["urgent"]}}, {}, "not one of egress.priorities"),
    ({"bulkhead": {"max_concurrent": 1, "default_priority": "Bad Name"}}, {}, "a priority class is"),
    ({}, {"priorities": {"classes": ["a", "a"], "default": "a"}}, "distinct"),
    ({}, {"priorities": {"default": "urgent"}}, "not one of the classes"),
    ({}, {"priorities": {"workflows": {"wf": "urgent"}}}, "not one of the classes"),
    ({"full_run_requires": {}}, {}, "name scopes_any"),
    ({}, {"run_modes": {"default": "validate_only"}}, "full_run' or 'test_run"),
    ({}, {"budgets": {"execution_max_lifetime": "soon"}}, "duration"),
    ({"retry": {"adaptive_after": -1}}, {}, "greater than or equal to 0"),
], ids=["no-concurrency", "unknown-header-class", "bad-class-name", "repeated-class", "unknown-default",
        "unknown-workflow-class", "empty-requirement", "validate-only-default", "bad-lifetime", "negative-streak"])
def test_nonsense_is_refused_at_load(route: dict[str, Any], top: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load(route, **top)
