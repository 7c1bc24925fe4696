"""The most a request can spend: output caps, prompt rules, prices, and refusals that name a reason."""

from __future__ import annotations

import orjson
import pytest

from portcullis.llm.estimate import EstimateRules, LlmRequest, SpendEstimate, estimate, parse_request
from portcullis.llm.prices import ModelPrice, PriceTable
from portcullis.llm.refusal import LlmReason, LlmRefusal
from portcullis.llm.usage import TokenUsage

GPT = ModelPrice.per_million(2.5, 10.0)
PRICES = PriceTable.build({"gpt-4o": GPT, "gpt-4o-mini*": ModelPrice.per_million(0.15, 0.6),
                           "gpt-4o*": ModelPrice.per_million(5.0, 15.0)})
RULES = EstimateRules(provider="openai", default_max_output_tokens=256, max_output_tokens=4096, prices=PRICES)


def parsed(body: object) -> LlmRequest:
    request = parse_request(orjson.dumps(body), max_bytes=1 << 20)
    assert isinstance(request, LlmRequest), request
    return request


def test_the_output_cap_in_the_body_and_the_prompt_bytes_make_the_estimate() -> None:
    raw = orjson.dumps({"model": "gpt-4o", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]})
    request = parse_request(raw, max_bytes=1 << 20)
    assert isinstance(request, LlmRequest)
    spend = estimate(request, RULES)
    assert spend == SpendEstimate("gpt-4o", len(raw), 100, GPT.most_micros(len(raw), 100), GPT, None)
    assert spend.cost_micros == -(-(len(raw) * 2_500_000 + 100 * 10_000_000) // 1_000_000)


@pytest.mark.parametrize(("body", "output"), [
    ({"max_tokens": 10, "max_completion_tokens": 300}, 300),  # both spellings: the larger is reserved
    ({"max_output_tokens": 50}, 50),  # the Responses API
    ({"max_tokens": 10, "n": 3}, 30),  # n choices, each up to the cap
])
def test_every_output_cap_spelling_counts_and_n_multiplies_it(body: dict[str, object], output: int) -> None:
    spend = estimate(parsed({"model": "gpt-4o", **body}), RULES)
    assert isinstance(spend, SpendEstimate) and spend.output_tokens == output and spend.output_cap_added is None


def test_a_body_without_an_output_cap_gets_the_routes_default_and_is_told_to_send_it() -> None:
    spend = estimate(parsed({"model": "gpt-4o", "messages": []}), RULES)
    assert isinstance(spend, SpendEstimate) and spend.output_tokens == 256 and spend.output_cap_added == 256


def test_the_chars_div_4_rule_counts_characters_rounded_up() -> None:
    request = parsed({"model": "gpt-4o", "max_tokens": 1, "messages": [{"role": "user", "content": "é" * 10}]})
    spend = estimate(request, EstimateRules(provider="openai", default_max_output_tokens=1, prompt_rule="chars_div_4"))
    assert isinstance(spend, SpendEstimate)
    assert spend.input_tokens == -(-request.chars // 4) and request.chars < request.size
    assert (spend.cost_micros, spend.price) == (0, None)  # no price table: tokens only


def test_model_prices_match_exactly_then_by_the_longest_prefix() -> None:
    assert PRICES.price("gpt-4o") is GPT
    assert PRICES.price("gpt-4o-mini-2024-07-18") == ModelPrice.per_million(0.15, 0.6)
    assert PRICES.price("gpt-4o-2024-08-06") == ModelPrice.per_million(5.0, 15.0)
    assert PRICES.price("claude-3") is None and PRICES.price(None) is None


@pytest.mark.parametrize(("raw", "refusal"), [
    (b"x" * 2000, LlmRefusal(LlmReason.BODY_TOO_LARGE)),
    (b"{not json", LlmRefusal(LlmReason.BODY_INVALID, "json")),
    (b"[1, 2]", LlmRefusal(LlmReason.BODY_INVALID, "json")),
    (b'{"model": 5}', LlmRefusal(LlmReason.BODY_INVALID, "model")),
    (b'{"stream": "yes"}', LlmRefusal(LlmReason.BODY_INVALID, "stream")),
    (b'{"max_tokens": -1}', LlmRefusal(LlmReason.BODY_INVALID, "max_tokens")),
    (b'{"max_tokens": 0}', LlmRefusal(LlmReason.BODY_INVALID, "max_tokens")),
    (b'{"max_completion_tokens": 1.5}', LlmRefusal(LlmReason.BODY_INVALID, "max_completion_tokens")),
    (b'{"max_output_tokens": true}', LlmRefusal(LlmReason.BODY_INVALID, "max_output_tokens")),
    (b'{"n": 1000}', LlmRefusal(LlmReason.BODY_INVALID, "n")),
], ids=["too-large", "not-json", "not-an-object", "model-type", "stream-type", "negative-cap", "zero-cap",
        "float-cap", "bool-cap", "too-many-choices"])
def test_a_body_that_cannot_be_estimated_is_refused(raw: bytes, refusal: LlmRefusal) -> None:
    assert parse_request(raw, max_bytes=1000) == refusal


def test_a_request_above_the_routes_output_cap_is_refused() -> None:
    assert estimate(parsed({"model": "gpt-4o", "max_tokens": 2000, "n": 3}), RULES) == \
        LlmRefusal(LlmReason.OUTPUT_CAP, "4096")


def test_an_unpriced_model_is_refused_unless_there_is_a_default_price() -> None:
    request = parsed({"model": "some-new-model", "max_tokens": 10})
    assert estimate(request, RULES) == LlmRefusal(LlmReason.UNKNOWN_MODEL)
    fallback = ModelPrice.per_million(30.0, 60.0)
    rules = EstimateRules(provider="openai", default_max_output_tokens=10,
                          prices=PriceTable.build({"gpt-4o": GPT}, default=fallback))
    spend = estimate(request, rules)
    assert isinstance(spend, SpendEstimate) and spend.price is fallback


def test_costs_are_exact_micro_units_rounded_up_and_cache_tokens_take_their_own_price() -> None:
    price = ModelPrice.per_million(3.0, 15.0, cache_read_per_million=0.3, cache_write_per_million=3.75)
    usage = TokenUsage(input_tokens=2110, output_tokens=25, cache_read_tokens=2000, cache_write_tokens=100)
    # 10 x 3.0 + 2000 x 0.3 + 100 x 3.75 + 25 x 15.0 = 30 + 600 + 375 + 375 = 1380 micro-units
    assert price.cost_micros(usage) == 1380
    assert ModelPrice.per_million(0.15, 0.6).cost_micros(TokenUsage(1, 0)) == 1  # 0.15 micro-units, rounded up
    assert price.most_micros(2110, 25) >= price.cost_micros(usage)  # a reservation covers any cache split
