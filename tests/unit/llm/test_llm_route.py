"""The ``llm:`` block of an egress route: what it accepts, what it refuses, and the rules it builds."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from portcullis.config.egress import EgressLlmConfig, nested_repetition
from portcullis.llm.prices import ModelPrice
from portcullis.llm.route import RESERVATION_SLACK_S, LlmCaller, LlmRoute, LlmSpend
from portcullis.llm.usage import TokenUsage
from portcullis.stores.base import BudgetLine

EXAMPLE = """
provider: openai
default_max_output_tokens: 512
max_output_tokens: 4096
prices:
  gpt-4o: {input_per_million: 2.5, output_per_million: 10}
  gpt-4o-mini*: {input_per_million: 0.15, output_per_million: 0.6}
budgets:
  execution_tokens: 20000
  user_cost_per_day: 5.00
  tokens_per_minute: 30000
  cost_per_day: 100
screening:
  patterns: ['ignore\\s+previous\\s+instructions']
  max_messages: 50
max_stream_duration: 5m
"""
CALLER = LlmCaller(execution_id="ex-1", workflow_id="wf-1", user="alice")


def config(text: str = EXAMPLE, **changes: Any) -> EgressLlmConfig:
    return EgressLlmConfig.model_validate({**yaml.safe_load(text), **changes})


def test_the_example_builds_rules_and_budget_lines_per_subject() -> None:
    route = LlmRoute.build("openai", config(), total_timeout_s=60.0)
    assert route.estimate_rules.prices is not None
    assert route.estimate_rules.prices.price("gpt-4o-mini-2024") == ModelPrice.per_million(0.15, 0.6)
    assert route.screen_rules is not None and len(route.screen_rules.patterns) == 1
    assert route.reservation_ttl_s == 300.0 + RESERVATION_SLACK_S  # the stream outlasts the total timeout
    lines = route.lines(CALLER, LlmSpend(tokens=700, cost_micros=4200))
    assert lines == [
        BudgetLine("llm_execution_tokens", "llm:openai:x:wf-1:ex-1:tokens", 20000, 86400.0, 700),
        BudgetLine("llm_user_cost_per_day", "llm:openai:u:alice:cost:d", 5_000_000, 86400.0, 4200),
        BudgetLine("llm_route_tokens_per_minute", "llm:openai:r:tokens:m", 30000, 60.0, 700),
        BudgetLine("llm_route_cost_per_day", "llm:openai:r:cost:d", 100_000_000, 86400.0, 4200),
    ]
    assert route.amounts(lines, LlmSpend(tokens=90, cost_micros=12)) == [90, 12, 90, 12]
    assert route.is_cost("llm_user_cost_per_day") and not route.is_cost("llm_execution_tokens")


def test_a_spend_is_priced_from_usage() -> None:
    price = ModelPrice.per_million(2.5, 10.0)
    assert LlmSpend.of_usage(TokenUsage(1000, 100), price) == LlmSpend(1100, 3500)
    assert LlmSpend.of_usage(TokenUsage(1000, 100), None) == LlmSpend(1100, 0)


@pytest.mark.parametrize(("changes", "message"), [
    ({"provider": "gemini"}, "provider"),
    ({"prices": {}, "default_price": None}, "cost budgets need `prices`"),
    ({"default_max_output_tokens": 8192}, "larger than max_output_tokens"),
    ({"prices": {"gpt-*-mini": {"input_per_million": 1, "output_per_million": 1}}}, "prefix ending"),
    ({"prices": {"*": {"input_per_million": 1, "output_per_million": 1}}}, "default_price"),
    ({"prices": {"gpt-4o": {"input_per_million": -1, "output_per_million": 1}}}, "greater than or equal"),
    ({"screening": {"patterns": ["(unclosed"]}}, "patterns[0]: not a regular expression"),
    ({"screening": {"patterns": ["system prompt", "(a+)+$"]}}, "patterns[1]: a repeated group that itself repeats"),
    ({"screening": {"control_chars": "ignore"}}, "control_chars"),
    ({"budgets": {"execution_tokens": 0}}, "execution_tokens"),
    ({"max_stream_bytes": "lots"}, "max_stream_bytes"),
    ({"stream": True}, "stream"),
], ids=["provider", "cost-without-prices", "default-above-cap", "inner-star", "bare-star", "negative-price",
        "bad-pattern", "redos-pattern", "char-rule", "zero-budget", "size", "unknown-field"])
def test_bad_llm_settings_are_refused_naming_the_field(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        config(**changes)
    assert message in str(info.value)


def test_a_route_without_budgets_or_prices_counts_tokens_only() -> None:
    route = LlmRoute.build("claude", config("provider: anthropic"), total_timeout_s=900.0)
    assert route.lines(CALLER, LlmSpend(10, 0)) == [] and route.estimate_rules.prices is None
    assert route.reservation_ttl_s == 900.0 + RESERVATION_SLACK_S and route.screen_rules is None


@pytest.mark.parametrize(("pattern", "nested"), [
    (r"(a+)+$", True), (r"(?:a+)+", True), (r"(a*b?)*", True), (r"(x|y+){2,}", True), (r"(?=(a+)+)", True),
    (r"(?>(a+)+)", True), (r"(\s+\w+)*", True),  # the last cannot blow up, and is refused all the same
    (r"ignore\s+(?:all\s+)?previous\s+instructions", False), (r"system\s+prompt", False), (r"a{1,3}b+", False),
    (r"(a+){1}", False), (r"((a|b)c)+", False), (r"(?:foo)+bar", False),
])
def test_nested_repetition_is_what_can_take_exponential_time(pattern: str, nested: bool) -> None:
    # The threat model's example patterns (docs/egress.md) pass; every pattern with a repeated
    # group that itself repeats is refused at load, before a hostile prompt can meet it.
    assert nested_repetition(pattern) is nested
